import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { TesseraError } from '@tessera/core'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { MAX_KMEANS_ITERS } from '../src/vq/config.js'
import { fsq } from '../src/fsq/fsq.js'

/** Issue 15, item 5: numeric options have the range the math needs, and messages print NaN and Infinity as such. */

const leftOf = <A>(r: E.Either<TesseraError, A>): TesseraError => {
  if (E.isRight(r)) throw new Error('expected a Left')
  return r.left
}
const vq = (o: Record<string, unknown>) => vectorQuantize({ dim: 4, codebook_size: 8, ...o })

describe('config bounds', () => {
  it.each([0, -1, [1, 0]])('ResidualFSQ soft_clamp_input_value %j is refused (every output would be 0 or flipped)', (v) => {
    const e = leftOf(residualFSQ({ levels: [5, 5], num_quantizers: 2, bound_hard_clamp: false, soft_clamp_input_value: v }))
    expect(e.where).toBe('ResidualFSQ.soft_clamp_input_value')
    expect(e.message).toContain('must be > 0')
    expect(E.isRight(residualFSQ({ levels: [5, 5], num_quantizers: 2, bound_hard_clamp: false, soft_clamp_input_value: 2 }))).toBe(true)
  })
  it.each([0, -3])('VectorQuantize codebook_diversity_temperature %j is refused', (v) => {
    expect(leftOf(vq({ codebook_diversity_temperature: v })).where).toBe('VectorQuantize.codebook_diversity_temperature')
  })
  it('reset_cluster_size must be >= 0; kmeans_iters is bounded', () => {
    expect(leftOf(vq({ threshold_ema_dead_code: 1, reset_cluster_size: -1 })).where).toBe('VectorQuantize.reset_cluster_size')
    expect(E.isRight(vq({ kmeans_init: true, kmeans_iters: MAX_KMEANS_ITERS }))).toBe(true)
    for (const n of [MAX_KMEANS_ITERS + 1, 1e9]) {
      const e = leftOf(vq({ kmeans_init: true, kmeans_iters: n }))
      expect(e.where).toBe('VectorQuantize.kmeans_iters')
      expect(e.message).toContain('unrolled')
    }
  })
  it('NaN and Infinity are printed as such, never as null', () => {
    expect(leftOf(vq({ decay: NaN })).message).toContain('got NaN')
    expect(leftOf(vq({ eps: Infinity })).message).toContain('got Infinity')
    expect(leftOf(fsq({ levels: [5, -Infinity] })).message).toContain('-Infinity')
    expect(leftOf(vq({ decay: NaN })).message).not.toContain('null')
  })
})
