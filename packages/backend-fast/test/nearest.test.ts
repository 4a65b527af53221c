import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { runWithWorkers } from './loop-helpers.js'

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
    // the two norms, the kernel and the gather (row copies, gather-step.ts): the transposed codebook is not a step either
    expect(kinds(nearest(10, 3, 5))).toEqual(['kernel', 'kernel', 'nearest', 'kernel'])
  })

  test('the transposed codebook is stored only when something besides the kernel reads it', () => {
    const plan = planProgram(nearest(10, 3, 5), { wasm: true, threads: 1 })
    const transposes = plan.steps.filter((s) => s.kind === 'kernel' && s.prim === 'transpose')
    expect(transposes).toEqual([])
    // no slot of the transposed shape [3, 5] is written by any step
    const written = new Set(plan.steps.flatMap((s) => (s.kind === 'rows' ? [] : s.kind === 'elem' ? s.outs : [s.out])))
    expect(plan.slotVars.filter((v, i) => written.has(i) && v.aval.shape.join() === '3,5')).toEqual([])
    const alsoOutput = traceOrThrow([f32([10, 3]), f32([5, 3])], (x: Tensor, cb: Tensor) => {
      const t = cb.mT
      return [x.square().sum(-1, true).sub(x.matmul(t).mul(2)).argmin(-1), t]
    }).program
    expect(kinds(alsoOutput)).toEqual(['kernel', 'kernel', 'nearest'])
    const alsoRead = traceOrThrow([f32([10, 3]), f32([5, 3])], (x: Tensor, cb: Tensor) => {
      const t = cb.mT
      return [x.matmul(t).neg().argmin(-1), t.sum(0)]
    }).program
    expect(kinds(alsoRead)).toEqual(['kernel', 'nearest', 'kernel'])
  })

  // B computed (not stored) through a transpose and elementwise ops, stored B (an input), and B
  // also read elsewhere (stored): every way the kernel gets B gives the reference's indices
  const variants: Record<string, (x: Tensor, cb: Tensor, cbT: Tensor) => Tensor[]> = {
    'scaled transpose': (x, cb) => [x.matmul(cb.mul(0.5).mT).neg().add(cb.square().sum(-1).mul(0.25)).argmin(-1)],
    'transpose of a transpose': (x, _cb, cbT) => [x.matmul(cbT.mT.mT).neg().argmin(-1)],
    'input B': (x, _cb, cbT) => [x.matmul(cbT).mul(-2).add(cbT.square().sum(0)).argmin(-1)],
    'B also an output': (x, cb) => {
      const t = cb.mT
      return [x.matmul(t).mul(-2).add(cb.square().sum(-1)).argmin(-1), t]
    },
  }
  test.prop(
    [
      fc.constantFrom(...Object.keys(variants)),
      fc
        .tuple(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 37 }))
        .chain(([n, d, k]) => fc.tuple(fc.constant([n, d, k] as const), gridArray(n * d), gridArray(k * d), gridArray(d * k))),
    ],
    { numRuns: 60 },
  )('however B is defined, indices equal the reference exactly on grid inputs', async (name, [[n, d, k], x, c, cT]) => {
    const p = traceOrThrow([f32([n, d]), f32([k, d]), f32([d, k])], variants[name]!).program
    expect(kinds(p)).toContain('nearest')
    const ins = [tensorOf(x, [n, d]), tensorOf(c, [k, d]), tensorOf(cT, [d, k])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    expect(got.map((t) => Array.from(t.data))).toEqual(want.map((t) => Array.from(t.data)))
  })

  // VectorQuantize's own form: one codebook's (1, N, K) distances, -sqrt(max(|x|^2 + |c|^2 - 2 x.c, 1e-8)), argmax
  const vqForm = (x: Tensor, cb: Tensor) => {
    const [n, d] = x.shape as [number, number]
    const k = cb.shape[0]!
    const x3 = x.reshape([1, n, d]), c3 = cb.reshape([1, k, d])
    const xe = x3.matmul(c3.mT)
    const dist = x3.square().sum(-1, true).add(c3.square().sum(-1).expandDims(1)).add(xe.mul(-2)).maximum(1e-8).sqrt().neg()
    return [dist.argmax(-1)]
  }
  test.prop(
    [
      fc
        .tuple(fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 37 }))
        .chain(([n, d, k]) => fc.tuple(fc.constant([n, d, k] as const), gridArray(n * d), gridArray(k * d))),
    ],
    { numRuns: 60 },
  )("VectorQuantize's batched argmax form is the pattern, with the reference's indices on grid inputs", async ([[n, d, k], x, c]) => {
    const p = traceOrThrow([f32([n, d]), f32([k, d])], vqForm).program
    expect(kinds(p)).toContain('nearest')
    const ins = [tensorOf(x, [n, d]), tensorOf(c, [k, d])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    expect(Array.from(got[0]!.data)).toEqual(Array.from(want[0]!.data))
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
    const two = await runWithWorkers(exe, ins, 2)
    // the worker (started with a heap limit) keeps answering over further calls
    for (let call = 0; call < 3; call++) expect(Array.from((await exe.run(ins))[0]!.data)).toEqual(Array.from(two[0]!.data))
    exe.dispose()
    const one = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    const ref = interpretProgram(p, ins)
    expect(Array.from(two[0]!.data)).toEqual(Array.from(one[0]!.data))
    // float32 vs float64 accumulation: only near-ties may differ from the reference
    const diff = Array.from(one[0]!.data).filter((v, i) => v !== ref[0]!.data[i]).length
    expect(diff).toBeLessThanOrEqual(3)
  })
})
