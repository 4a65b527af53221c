import { fc, test } from '@fast-check/vitest'
import { describe, expect } from 'vitest'
import type { HostTensor, Tensor } from '@tessera/core'
import { concat, planKernels, tensorOf, traceOrThrow } from '@tessera/core'
import { fusedCpuBackend, interpretProgram } from '../src/index.js'

/**
 * Concats of more pieces than a kernel may read (32 residual layers' indices, 16 groups) lower
 * to a tree of concats: every kernel reads at most `maxKernelArgs` buffers, and the values are
 * the reference's exactly.
 */
describe('wide concats are split to fit a kernel', () => {
  test.prop([fc.integer({ min: 2, max: 40 }), fc.constantFrom(2, 6, 12), fc.integer({ min: 0, max: 1 })], { numRuns: 30 })(
    'n pieces, any limit, either axis',
    async (n, maxKernelArgs, axis) => {
      const shape = axis === 0 ? [2, 3] : [3, 2]
      const p = traceOrThrow(
        Array.from({ length: n }, () => ({ shape, dtype: 'float32' as const })),
        (...xs: Tensor[]) => [concat(xs.map((x) => x.mul(2)), axis)],
      ).program
      const ins: HostTensor[] = Array.from({ length: n }, (_, k) => tensorOf(Array.from({ length: 6 }, (_, i) => k * 10 + i), shape))
      const backend = fusedCpuBackend({ maxKernelArgs })
      for (const k of planKernels(backend.plan(p))) expect(k.args.length).toBeLessThanOrEqual(maxKernelArgs)
      const got = await backend.compile(p).run(ins)
      expect(Array.from(got[0]!.data)).toEqual(Array.from(interpretProgram(p, ins)[0]!.data))
    },
  )
})
