import type { Aval, Tensor } from '@tessera/core'
import { TesseraError, run, traceOrThrow } from '@tessera/core'
import { describe, expect, test } from 'vitest'
import { gpuJsBackend } from '../src/index.js'

/**
 * gpu.js reports its own failures (a shader that does not compile, a GL limit) as bare Errors.
 * The backend must hand them on as TesseraErrors of kind `backend`, so `run` returns a Left a
 * caller can tell apart from bad input. A failing gpu.js is simulated by replacing createKernel.
 */
const program = traceOrThrow([{ shape: [3], dtype: 'float32' } as Aval], (x: Tensor) => x.exp().add(1)).program
const inputs = [{ shape: [3], dtype: 'float32' as const, data: new Float32Array([1, 2, 3]) }]

const failingBackend = (failAt: 'create' | 'call') => {
  const b = gpuJsBackend('cpu')
  const gpu = b.gpu as { createKernel: unknown }
  gpu.createKernel = () => {
    if (failAt === 'create') throw new Error('shader compilation failed')
    return () => {
      throw new Error('GL_OUT_OF_MEMORY')
    }
  }
  return b
}

describe('errors from gpu.js are backend errors', () => {
  test('a kernel gpu.js cannot create', async () => {
    const b = failingBackend('create')
    const r = await run(program, inputs, b)
    if (r._tag === 'Right') throw new Error('expected a Left')
    expect(r.left).toBeInstanceOf(TesseraError)
    expect(r.left.kind).toBe('backend')
    expect(r.left.where).toBe('gpujs(cpu)')
    expect(r.left.message).toContain('shader compilation failed')
    b.dispose()
  })

  test('a kernel that fails when run', async () => {
    const b = failingBackend('call')
    const r = await run(program, inputs, b)
    if (r._tag === 'Right') throw new Error('expected a Left')
    expect(r.left.kind).toBe('backend')
    expect(r.left.message).toContain('running the kernel')
    expect(r.left.message).toContain('GL_OUT_OF_MEMORY')
    b.dispose()
  })

  test('an unknown mode', () => {
    let err: unknown
    try {
      gpuJsBackend('nope' as never)
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(TesseraError)
    expect((err as TesseraError).kind).toBe('backend')
  })
})
