import { describe, expect, it } from 'vitest'
import type { Backend, Tensor } from '@tessera/core'
import { TesseraError, tensorOf, traceOrThrow } from '@tessera/core'
import { cpuBackend, fusedCpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import type { Lane } from './lanes.js'
import { gpuJsLane } from './lanes.js'

/**
 * Backend lifetimes (issue 12): a disposed backend refuses to compile, and its executables refuse
 * to run, with a TesseraError of kind backend; `dispose()` resolves once resources are freed, so
 * a loop that creates, uses and disposes backends stays flat in memory.
 */

const nearest = (n: number, d: number, k: number) => ({
  program: traceOrThrow([{ shape: [n, d], dtype: 'float32' as const }, { shape: [k, d], dtype: 'float32' as const }], (x: Tensor, cb: Tensor) => [
    x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1),
  ]).program,
  inputs: [tensorOf(Array.from({ length: n * d }, (_, i) => Math.sin(i)), [n, d]), tensorOf(Array.from({ length: k * d }, (_, i) => Math.cos(i)), [k, d])],
})
// large enough that the fast backend's nearest-code kernel starts a worker thread; small elsewhere
const big = nearest(3000, 24, 100)
const small = nearest(64, 8, 32)

const lanes: readonly (Lane & { readonly work: typeof big })[] = [
  { name: 'cpu', make: async () => cpuBackend(), work: small },
  { name: 'cpu-fused', make: async () => fusedCpuBackend(), work: small },
  { name: 'fast (2 threads)', make: async () => fastBackend({ threads: 2 }), work: big },
  { ...gpuJsLane('cpu'), work: small },
  { ...gpuJsLane('webasm'), work: small },
  { ...gpuJsLane('headlessgl'), work: small },
]

const disposedRefusal = (e: unknown) => e instanceof TesseraError && e.kind === 'backend' && /disposed/.test(e.message)

for (const lane of lanes)
  describe(`lifetimes on ${lane.name}`, async () => {
    const probe = await lane.make()
    if ('skip' in probe) {
      console.warn(`[quantizers/lifetimes] ${lane.name} is SKIPPED: ${probe.skip}`)
      it.skip(`${lane.name} skipped: ${probe.skip}`, () => {})
      return
    }
    await probe.dispose?.()
    const make = async () => (await lane.make()) as Backend
    const { program, inputs } = lane.work

    it('after dispose, compile and run refuse with a clear error', async () => {
      const backend = await make()
      const exe = backend.compile(program)
      await exe.run(inputs)
      await backend.dispose!()
      await expect(exe.run(inputs)).rejects.toSatisfy(disposedRefusal)
      expect(() => backend.compile(program)).toThrow(/disposed/)
      // a second dispose is harmless
      await backend.dispose!()
    })

    it('creating, running and disposing backends in a loop stays flat in memory', async () => {
      const cycle = async () => {
        const backend = await make()
        await backend.compile(program).run(inputs)
        await backend.dispose!()
      }
      for (let i = 0; i < 5; i++) await cycle()
      const before = process.memoryUsage().rss
      for (let i = 0; i < 40; i++) await cycle()
      const grown = (process.memoryUsage().rss - before) / 2 ** 20
      // one leaked context, worker or plan per cycle would cost far more than this over 40 cycles
      expect(grown, `rss grew ${grown.toFixed(1)} MiB over 40 cycles`).toBeLessThan(40)
    }, 120_000)
  })
