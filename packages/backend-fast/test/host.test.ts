import type { Tensor } from '@tessera/core'
import { traceOrThrow } from '@tessera/core'
import { afterEach, expect, it, vi } from 'vitest'
import { fastBackend } from '../src/index.js'
import { hasNodeWorkerThreads, nodeWorkerThreads } from '../src/host.js'

afterEach(() => {
  vi.restoreAllMocks()
})

it('says Node has worker threads, as loading the module does', () => {
  expect(hasNodeWorkerThreads()).toBe(true)
  expect(nodeWorkerThreads()).toBeDefined()
})

// node:worker_threads is looked up when a worker starts, not by fastBackend() or a small
// program's compile and run (loading it costs milliseconds in a fresh process)
it('looks up node:worker_threads only when a worker is started', async () => {
  const spy = vi.spyOn(process, 'getBuiltinModule')
  const b = fastBackend({ threads: 2 })
  expect(b.name).toContain('(2t)')
  expect((b as { threadsNote?: string }).threadsNote).toBeUndefined()
  const p = traceOrThrow([{ shape: [4], dtype: 'float32' as const }], (x: Tensor) => [x.add(1)]).program
  const [y] = await b.compile(p).run([{ shape: [4], dtype: 'float32', data: new Float32Array([1, 2, 3, -0.5]) }])
  expect([...y!.data]).toEqual([2, 3, 4, 0.5])
  expect(spy.mock.calls.map((c) => c[0])).not.toContain('node:worker_threads')
  await b.dispose?.()
})
