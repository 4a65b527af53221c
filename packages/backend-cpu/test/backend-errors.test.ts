import type { HostTensor, Kernel, Plan } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import { describe, expect, test } from 'vitest'
import { runPlan } from '../src/index.js'

/**
 * A plan that indexes outside a buffer can only come from a lowering bug, so the fused
 * interpreter reports it as a `backend` error (bad user data, such as a gather index, is a
 * `runtime` error instead, as in the reference).
 */
describe('fused-plan interpreter errors', () => {
  test('a kernel that loads outside its buffer is a backend error naming the buffers', () => {
    // b1[i] = b0[5] with b0 of 2 elements
    const kernel: Kernel = {
      out: 1,
      size: 1,
      dtype: 'float32',
      args: [0],
      nodes: [{ k: 'lit', value: 5, dtype: 'int32' }, { k: 'load', buf: 0, at: 0, dtype: 'float32' }],
      root: 1,
    }
    const plan: Plan = {
      buffers: [
        { id: 0, shape: [2], dtype: 'float32', size: 2, kind: 'input' },
        { id: 1, shape: [1], dtype: 'float32', size: 1, kind: 'temp' },
      ],
      inputs: [0],
      outputs: [1],
      steps: [{ k: 'alloc', buf: 1 }, { k: 'kernel', kernel }],
      gatherIndexInputs: [],
    }
    const x: HostTensor = { shape: [2], dtype: 'float32', data: new Float32Array([1, 2]) }
    let err: unknown
    try {
      runPlan(plan, [x])
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(TesseraError)
    expect((err as TesseraError).kind).toBe('backend')
    expect((err as TesseraError).where).toBe('cpu-fused')
    expect((err as TesseraError).message).toContain('reads b0[5] outside its 2 elements')
  })
})
