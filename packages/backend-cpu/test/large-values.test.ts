import { fc, test } from '@fast-check/vitest'
import { describe, expect } from 'vitest'
import type { HostTensor, Tensor } from '@tessera/core'
import type { Plan, Schedule } from '@tessera/core'
import { planKernels, scheduleKernel, tensorOf, traceOrThrow } from '@tessera/core'
import { fusedCpuBackend, interpretProgram } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

/** LFQ's entropy terms: softmax over codes, per-row entropy, entropy of the mean over rows. */
const entropy = (x: Tensor, cb: Tensor) => {
  const prob = x.matmul(cb.mT).mul(-2).mul(-10).softmax(-1)
  const h = (p: Tensor, axis: number | undefined) => p.mul(p.maximum(1e-5).log()).sum(axis).neg()
  return [h(prob, -1).mean(), h(prob.mean(0), undefined)]
}

/** Every loop of a plan runs at most `limit` iterations per invocation, counted across the loops around it. */
function expectWithinLoopLimit(plan: Plan, limit: number): void {
  const check = (s: Schedule, around: number): void => {
    if (!s.loop) return
    expect(around * (s.loop.size + 2)).toBeLessThanOrEqual(limit)
    check(s.loop.body, around * s.loop.size)
  }
  for (const k of planKernels(plan)) check(scheduleKernel(k), 1)
}

const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 1.5)

/**
 * A GPU's lowering, run on the CPU with limits scaled down: a value at or above `exactIntLimit`
 * elements is never stored (each kernel that reads it recomputes it, a reduction inside it
 * nests as an inner loop), and a loop that would run past `maxLoop` (counted across the loops
 * around it) takes several elements an iteration. The
 * fused CPU interpreter then computes in float64 per kernel, so results agree with the
 * reference to rounding: the chunked sums add in another order.
 */
describe('values too large to store, loops too long to run', () => {
  test.prop([fc.integer({ min: 5, max: 40 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 3, max: 6 }), fc.integer({ min: 30, max: 200 })], { numRuns: 40 })(
    'entropy terms with the logits never stored agree with the reference',
    async (n, dim, logK, maxLoop) => {
      const k = 2 ** logK
      const p = traceOrThrow([f32([n, dim]), f32([k, dim])], entropy).program
      const ins: HostTensor[] = [tensorOf(values(n * dim, 1), [n, dim]), tensorOf(values(k * dim, 2), [k, dim])]
      // the n x k logits and probabilities count as too large; the inputs (n, k > dim) and n-vectors do not
      const backend = fusedCpuBackend({ exactIntLimit: n * k, maxLoop })
      const plan = backend.plan(p)
      expect(Math.max(...plan.buffers.map((b) => b.size))).toBeLessThan(n * k)
      expectWithinLoopLimit(plan, maxLoop)
      const got = await backend.compile(p).run(ins)
      const want = interpretProgram(p, ins)
      got.forEach((g, i) => expect(Math.abs(g.data[0]! - want[i]!.data[0]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[i]!.data[0]!))))
    },
  )

  test.prop([fc.integer({ min: 2, max: 30 }), fc.integer({ min: 2, max: 9 }), fc.integer({ min: 1, max: 4 })], { numRuns: 30 })(
    'an output too large for one buffer is written in parts along its first axis and joined',
    async (n, k, rowsPerPart) => {
      // an outer product: inputs of n and k elements, an n x k output
      const p = traceOrThrow([f32([n, 1]), f32([1, k])], (x: Tensor, c: Tensor) => {
        const d = x.mul(c).tanh()
        return [d, d.sum(-1)]
      }).program
      const ins = [tensorOf(values(n, 3), [n, 1]), tensorOf(values(k, 4), [1, k])]
      const limit = Math.max(n, k, rowsPerPart * k) + 1
      const backend = fusedCpuBackend({ exactIntLimit: limit })
      const plan = backend.plan(p)
      const whole = plan.buffers.find((b) => b.parts)
      expect(whole !== undefined, 'the output is in parts exactly when it does not fit').toBe(n * k >= limit)
      for (const part of whole?.parts ?? []) expect(plan.buffers[part]!.size).toBeLessThan(limit)
      const got = await backend.compile(p).run(ins)
      const want = interpretProgram(p, ins)
      got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
    },
  )

  test.prop([fc.integer({ min: 1, max: 12 }), fc.integer({ min: 2, max: 24 }), fc.integer({ min: 2, max: 40 }), fc.integer({ min: 40, max: 300 })], { numRuns: 40 })(
    "a loop whose count, across the loops around it, would pass maxLoop takes several elements an iteration (llvmpipe)",
    async (n, d, k, maxLoop) => {
      // nearest-code search on a 1/8 grid: every dot product is exact in float32, so indices must match exactly
      const p = traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => [
        x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1),
      ]).program
      const grid = (len: number, seed: number) => values(len, seed).map((v) => Math.round(v * 8) / 8)
      const ins = [tensorOf(grid(n * d, 5), [n, d]), tensorOf(grid(k * d, 6), [k, d])]
      const backend = fusedCpuBackend({ maxLoop })
      if (k + 2 > maxLoop * 0.9) {
        // the argmin's own loop does not fit (an argmin takes one element an iteration): refused, never cut short
        expect(() => backend.plan(p)).toThrow(/loop limit/)
        return
      }
      expectWithinLoopLimit(backend.plan(p), maxLoop)
      const got = await backend.compile(p).run(ins)
      expect(Array.from(got[0]!.data)).toEqual(Array.from(interpretProgram(p, ins)[0]!.data))
    },
  )

  test('an output whose rows alone are too large is refused, naming it', () => {
    const p = traceOrThrow([f32([2, 8]), f32([4, 8])], (x: Tensor, cb: Tensor) => [x.reshape([16]).add(1)]).program
    expect(() => fusedCpuBackend({ exactIntLimit: 8 }).plan(p)).toThrow(/the input f32\[2,8\] has 16 elements/)
  })
})
