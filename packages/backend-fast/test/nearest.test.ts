import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

function nearest(n: number, d: number, k: number): Program {
  return traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => {
    const dist = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1))
    const idx = dist.argmin(-1)
    return [idx, cb.gather(idx, 0)]
  }).program
}

/** Values on a 1/8 grid: dot products are exact in float32, so indices must match exactly, ties included. */
const gridArray = (len: number) => fc.array(fc.integer({ min: -16, max: 16 }).map((v) => v / 8), { minLength: len, maxLength: len })

const kinds = (p: Program, threads = 1) => planProgram(p, { wasm: true, threads }).steps.map((s) => s.kind)

describe('nearest-code kernel', () => {
  test('the pattern is recognized and the distance matrix is never a step of its own', () => {
    expect(kinds(nearest(10, 3, 5))).toEqual(['kernel', 'kernel', 'kernel', 'nearest', 'reference'])
  })

  test('a distance that is also an output is not absorbed (it must be stored)', () => {
    const p = traceOrThrow([f32([6, 3]), f32([5, 3])], (x: Tensor, cb: Tensor) => {
      const dist = x.matmul(cb.mT).neg()
      return [dist.argmin(-1), dist]
    }).program
    expect(kinds(p)).not.toContain('nearest')
  })

  // sizes chosen to hit row tails (n % 2), column tails (k % 16) and several chunks
  test.prop(
    [
      fc
        .tuple(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 37 }))
        .chain(([n, d, k]) => fc.tuple(fc.constant([n, d, k] as const), gridArray(n * d), gridArray(k * d))),
    ],
    { numRuns: 60 },
  )('indices and codes equal the reference exactly on grid inputs (ties go to the first index)', async ([[n, d, k], x, c]) => {
    const p = nearest(n, d, k)
    const ins = [tensorOf(x, [n, d]), tensorOf(c, [k, d])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    expect(Array.from(got[0]!.data)).toEqual(Array.from(want[0]!.data))
    expect(Array.from(got[1]!.data)).toEqual(Array.from(want[1]!.data))
  })

  test('a NaN distance wins at its first index, as in the reference', async () => {
    const p = traceOrThrow([f32([3, 2]), f32([20, 2])], (x: Tensor, cb: Tensor) => [x.matmul(cb.mT).neg().add(x.sum(-1, true)).argmin(-1)]).program
    const cb = Array.from({ length: 40 }, (_, i) => (i % 7) - 3)
    cb[2 * 17] = NaN
    cb[2 * 5 + 1] = NaN
    const x = [1, 2, 0, 0, -1, 3]
    const ins = [tensorOf(x, [3, 2]), tensorOf(cb, [20, 2])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    expect(Array.from(got[0]!.data)).toEqual(Array.from(want[0]!.data))
    expect(Array.from(want[0]!.data)).toEqual([5, 5, 5])
  })

  test('worker threads give the same indices as one thread (large enough to use them)', async () => {
    const n = 3000, d = 24, k = 100
    let s = 1
    const rnd = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1
    const ins: HostTensor[] = [tensorOf(Array.from({ length: n * d }, rnd), [n, d]), tensorOf(Array.from({ length: k * d }, rnd), [k, d])]
    const p = nearest(n, d, k)
    const b2 = fastBackend({ threads: 2 })
    const exe = b2.compile(p)
    const two = await exe.run(ins)
    exe.dispose()
    const one = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    const ref = interpretProgram(p, ins)
    expect(Array.from(two[0]!.data)).toEqual(Array.from(one[0]!.data))
    // float32 vs float64 accumulation: only near-ties may differ from the reference
    const diff = Array.from(one[0]!.data).filter((v, i) => v !== ref[0]!.data[i]).length
    expect(diff).toBeLessThanOrEqual(3)
  })
})
