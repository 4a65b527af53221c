import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { TesseraError } from '@tessera/core'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
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
    // k-means with no iteration has no clusters (the reference fails on its first batch)
    expect(leftOf(vq({ kmeans_init: true, kmeans_iters: 0 })).where).toBe('VectorQuantize.kmeans_iters')
    expect(E.isRight(vq({ kmeans_iters: 0 }))).toBe(true)
  })
  // VectorQuantize's reparametrisation options: each bad value is a Left at its own field
  const fnBridge = (e: unknown) => e
  const sgdLike = { kind: 'sgd', init: () => ({}), stateSpecs: () => ({}), update: (p: unknown) => ({ params: p, state: {} }) }
  it.each([
    ['affine_param', { affine_param: 'yes' }],
    ['affine_param', { affine_param: true, use_cosine_sim: true }],
    ['sync_affine_param', { sync_affine_param: 1 }],
    ['affine_param_batch_decay', { affine_param: true, affine_param_batch_decay: 1.5 }],
    ['affine_param_batch_decay', { affine_param_batch_decay: NaN }],
    ['affine_param_codebook_decay', { affine_param_codebook_decay: -0.1 }],
    ['directional_reparam', { directional_reparam: true }],
    ['directional_reparam', { directional_reparam: 'on', threshold_ema_dead_code: 2 }],
    ['directional_reparam_variance', { directional_reparam: true, threshold_ema_dead_code: 2, directional_reparam_variance: -1 }],
    ['straight_through', { directional_reparam: true, threshold_ema_dead_code: 2, rotation_trick: true }],
    ['sync_update_v', { learnable_codebook: true, ema_update: false, sync_update_v: 1.5 }],
    ['sync_update_v', { sync_update_v: 0.5 }],
    ['vq_bridge', { vq_bridge: 'mlp' }],
    ['vq_bridge', { vq_bridge: fnBridge, learnable_codebook: false }],
    ['ema_update', { vq_bridge: fnBridge, ema_update: true }],
    ['in_place_codebook_optimizer', { in_place_codebook_optimizer: 'sgd', learnable_codebook: true, ema_update: false }],
    ['in_place_codebook_optimizer', { in_place_codebook_optimizer: sgdLike }],
    ['manual_in_place_optimizer_update', { manual_in_place_optimizer_update: 2 }],
    ['manual_in_place_optimizer_update', { manual_in_place_optimizer_update: true }],
    ['commitment_use_cross_entropy_loss', { commitment_use_cross_entropy_loss: 'yes' }],
    ['return_zeros_for_masked_padding', { return_zeros_for_masked_padding: 1 }],
    ['layernorm_after_project_in', { layernorm_after_project_in: null }],
  ] as const)('VectorQuantize %s: a bad value or combination is refused at that field (%j)', (field, o) => {
    const e = leftOf(vq(o))
    expect(e.kind).toBe('config')
    expect(e.where).toBe(`VectorQuantize.${field}`)
  })
  it('sync_codebook and sync_kmeans: a bad value is refused at its field (VectorQuantize and ResidualVQ); defaults as the reference', () => {
    for (const [field, v] of [['sync_codebook', 'yes'], ['sync_codebook', 1], ['sync_kmeans', null], ['sync_kmeans', 'no']] as const) {
      const e = leftOf(vq({ [field]: v }))
      expect([e.kind, e.where]).toEqual(['config', `VectorQuantize.${field}`])
      expect(leftOf(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, [field]: v })).where).toBe(`ResidualVQ.${field}`)
    }
    const c = E.getOrElseW(() => undefined)(vq({}))!.config
    expect([c.sync_codebook, c.sync_kmeans]).toEqual([null, true])
    expect(E.isRight(vq({ sync_codebook: true, sync_kmeans: false }))).toBe(true)
  })
  it('their defaults follow the reference: DiVeQ and a bridge learn the codebook without EMA, DiVeQ turns the rotation trick off', () => {
    const d = E.getOrElseW(() => undefined)(vq({ directional_reparam: true, threshold_ema_dead_code: 2 }))!.config
    expect([d.learnable_codebook, d.ema_update, d.rotation_trick, d.directional_reparam_variance]).toEqual([true, false, false, 5e-3])
    const b = E.getOrElseW(() => undefined)(vq({ vq_bridge: fnBridge }))!.config
    expect([b.learnable_codebook, b.ema_update, b.rotation_trick]).toEqual([true, false, true])
    const a = E.getOrElseW(() => undefined)(vq({ affine_param: true }))!.config
    expect([a.affine_param_batch_decay, a.affine_param_codebook_decay, a.sync_affine_param]).toEqual([0.99, 0.9, false])
  })
  it("VectorQuantize's own forward options default as in the reference, and ResidualVQ hands them to its layers", () => {
    const c = E.getOrElseW(() => undefined)(vq({}))!.config
    expect([c.commitment_use_cross_entropy_loss, c.return_zeros_for_masked_padding, c.layernorm_after_project_in]).toEqual([false, true, false])
    for (const [k, v] of [['commitment_use_cross_entropy_loss', true], ['return_zeros_for_masked_padding', false], ['layernorm_after_project_in', true]] as const) {
      const r = residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, [k]: v })
      expect(E.isRight(r) && r.right.config.layers.map((l) => l[k])).toEqual([v, v])
      expect(leftOf(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, [k]: 'x' })).where).toBe(`ResidualVQ.${k}`)
    }
  })
  it('NaN and Infinity are printed as such, never as null', () => {
    expect(leftOf(vq({ decay: NaN })).message).toContain('got NaN')
    expect(leftOf(vq({ eps: Infinity })).message).toContain('got Infinity')
    expect(leftOf(fsq({ levels: [5, -Infinity] })).message).toContain('-Infinity')
    expect(leftOf(vq({ decay: NaN })).message).not.toContain('null')
  })
})
