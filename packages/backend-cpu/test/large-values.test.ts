import { fc, test } from '@fast-check/vitest'
import { describe, expect } from 'vitest'
import type { HostTensor, Tensor } from '@tessera/core'
import { planKernels, tensorOf, traceOrThrow } from '@tessera/core'
import { fusedCpuBackend, interpretProgram } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

/** LFQ's entropy terms: softmax over codes, per-row entropy, entropy of the mean over rows. */
const entropy = (x: Tensor, cb: Tensor) => {
  const prob = x.matmul(cb.mT).mul(-2).mul(-10).softmax(-1)
  const h = (p: Tensor, axis: number | undefined) => p.mul(p.maximum(1e-5).log()).sum(axis).neg()
  return [h(prob, -1).mean(), h(prob.mean(0), undefined)]
}

const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 1.5)

/**
 * A GPU's lowering, run on the CPU with limits scaled down: a value at or above `exactIntLimit`
 * elements is never stored (each kernel that reads it recomputes it, a reduction inside it
 * nests as an inner loop), and a loop longer than `maxLoop` becomes chunked nested loops. The
 * fused CPU interpreter then computes in float64 per kernel, so results agree with the
 * reference to rounding: the chunked sums add in another order.
 */
describe('values too large to store, loops too long to run', () => {
  test.prop([fc.integer({ min: 5, max: 40 }), fc.integer({ min: 1, max: 4 }), fc.integer({ min: 3, max: 6 }), fc.integer({ min: 8, max: 50 })], { numRuns: 40 })(
    'entropy terms with the logits never stored agree with the reference',
    async (n, dim, logK, maxLoop) => {
      const k = 2 ** logK
      const p = traceOrThrow([f32([n, dim]), f32([k, dim])], entropy).program
      const ins: HostTensor[] = [tensorOf(values(n * dim, 1), [n, dim]), tensorOf(values(k * dim, 2), [k, dim])]
      // the n x k logits and probabilities count as too large; the inputs (n, k > dim) and n-vectors do not
      const backend = fusedCpuBackend({ exactIntLimit: n * k, maxLoop })
      const plan = backend.plan(p)
      expect(Math.max(...plan.buffers.map((b) => b.size))).toBeLessThan(n * k)
      // two chunk levels cover loops up to maxLoop^2 (here >= 64, the longest loop 64)
      for (const kernel of planKernels(plan))
        for (const node of kernel.nodes) if (node.k === 'reduce') expect(node.size).toBeLessThanOrEqual(maxLoop)
      const got = await backend.compile(p).run(ins)
      const want = interpretProgram(p, ins)
      got.forEach((g, i) => expect(Math.abs(g.data[0]! - want[i]!.data[0]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(want[i]!.data[0]!))))
    },
  )

  test('a value too large to store that is itself an output is refused, naming it', () => {
    const p = traceOrThrow([f32([8, 2]), f32([4, 2])], (x: Tensor, cb: Tensor) => [x.matmul(cb.mT)]).program
    expect(() => fusedCpuBackend({ exactIntLimit: 32 }).plan(p)).toThrow(/the output \(matmul\) f32\[8,4\] has 32 elements/)
  })
})
