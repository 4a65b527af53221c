import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Tensor } from '@tessera/core'
import { runOrThrow, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'

/**
 * VectorQuantize's EMA statistics over a one-hot matrix (one-hot.ts): the codes' sums
 * `onehot.mT · x` and counts `onehot.sum(tokens)` as scatter-adds, bit for bit the reference's
 * dense float64 product and sum, non-finite rows and indices outside the codes included.
 */
const program = (lead: boolean, t: number, k: number, d: number) =>
  traceOrThrow([{ shape: lead ? [1, t] : [t], dtype: 'int32' }, { shape: lead ? [1, t, d] : [t, d], dtype: 'float32' }] as const, (ind: Tensor, x: Tensor) => {
    // as quantizers/src/vq/codebook.ts writes it
    const onehot = ind.expandDims(-1).eq(ind.builder.iota([k], 0)).cast('float32')
    return [onehot.mT.matmul(x), onehot.sum(lead ? 1 : 0)]
  }).program

const same = (got: readonly HostTensor[], want: readonly HostTensor[]) =>
  want.forEach((w, i) => expect(Array.from(got[i]!.data).map((v) => (Number.isNaN(v) ? 'NaN' : Object.is(v, -0) ? '-0' : v))).toEqual(Array.from(w.data).map((v) => (Number.isNaN(v) ? 'NaN' : Object.is(v, -0) ? '-0' : v))))

describe('one-hot sums and counts as scatter-adds', () => {
  test('the plan has no transposed one-hot and no dense product: two scatter steps', () => {
    const steps = planProgram(program(true, 64, 8, 4), { wasm: true, threads: 1 }).steps
    const sources = steps.flatMap((s) => (s.kind === 'kernel' ? [s.kernel.source] : []))
    expect(sources.filter((src) => src.includes('one-hot product'))).toHaveLength(1)
    expect(sources.filter((src) => src.includes('one-hot counts'))).toHaveLength(1)
    expect(steps.some((s) => s.kind === 'matmul')).toBe(false)
  })

  const value = fc.oneof(
    { weight: 8, arbitrary: fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e3, max: 1e3 }) },
    { weight: 1, arbitrary: fc.constantFrom(Infinity, -Infinity, NaN, 0, -0, 3e38, -3e38) },
  )
  const cases = fc
    .record({ lead: fc.boolean(), t: fc.integer({ min: 1, max: 24 }), k: fc.integer({ min: 1, max: 6 }), d: fc.integer({ min: 1, max: 4 }) })
    .chain((s) => fc.record({
      s: fc.constant(s),
      ind: fc.array(fc.integer({ min: -1, max: s.k }), { minLength: s.t, maxLength: s.t }),
      x: fc.array(value, { minLength: s.t * s.d, maxLength: s.t * s.d }),
    }))
  test.prop([cases], { numRuns: 150 })('the reference\'s bits on any indices and rows (fast with and without WebAssembly)', async ({ s, ind, x }) => {
    const p = program(s.lead, s.t, s.k, s.d)
    const ins: HostTensor[] = [
      { shape: s.lead ? [1, s.t] : [s.t], dtype: 'int32', data: Int32Array.from(ind) },
      { shape: s.lead ? [1, s.t, s.d] : [s.t, s.d], dtype: 'float32', data: Float32Array.from(x) },
    ]
    const want = interpretProgram(p, ins)
    for (const wasm of [true, false]) same(await runOrThrow(p, ins, fastBackend({ threads: 1, wasm })), want)
  })
})
