import type * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { Finite, check } from '../config/codec.js'
import type { VQBridge } from './bridge.js'
import { VQBridgeCodec } from './bridge.js'
import type { InPlaceOptimizer } from './in-place-optimizer.js'
import { InPlaceOptimizerCodec } from './in-place-optimizer.js'

/**
 * VectorQuantize's options for how the codebook is parametrised and learned: the affine
 * reparametrisation, DiVeQ, the synchronous update rule, the FVQ bridge and the in-place codebook
 * optimizer. The two that take code (`vq_bridge`, `in_place_codebook_optimizer`) are constructor
 * arguments in the reference, and their presence changes other defaults and the state's layout, so
 * they are config values (checked by their codecs), not per-call options. ResidualVQ passes them
 * to its layers (all but `directional_reparam`, see residual-vq/config.ts);
 * RandomProjectionQuantizer refuses them as unknown keys.
 */
export const vqReparamProps = {
  affine_param: t.boolean,
  sync_affine_param: t.boolean,
  affine_param_batch_decay: Finite,
  affine_param_codebook_decay: Finite,
  directional_reparam: t.boolean,
  directional_reparam_variance: Finite,
  sync_update_v: Finite,
  vq_bridge: t.union([VQBridgeCodec, t.null]),
  in_place_codebook_optimizer: t.union([InPlaceOptimizerCodec, t.null]),
  manual_in_place_optimizer_update: t.boolean,
}

type ReparamOptions = { readonly [K in keyof typeof vqReparamProps]?: t.TypeOf<(typeof vqReparamProps)[K]> }

export interface ReparamConfig {
  readonly affine_param: boolean
  /** The batch statistics are sums and counts reduced across ranks (all-reduced over the call's world; one process without one). */
  readonly sync_affine_param: boolean
  readonly affine_param_batch_decay: number
  readonly affine_param_codebook_decay: number
  readonly directional_reparam: boolean
  readonly directional_reparam_variance: number
  readonly sync_update_v: number
  readonly vq_bridge: VQBridge | null
  readonly in_place_codebook_optimizer: InPlaceOptimizer | null
  /** The forward leaves the in-place step to `updateInPlaceOptimizer` (its gradient comes back in the result). */
  readonly manual_in_place_optimizer_update: boolean
}

export function reparamConfigOf(o: ReparamOptions): ReparamConfig {
  return {
    affine_param: o.affine_param ?? false,
    sync_affine_param: o.sync_affine_param ?? false,
    affine_param_batch_decay: o.affine_param_batch_decay ?? 0.99,
    affine_param_codebook_decay: o.affine_param_codebook_decay ?? 0.9,
    directional_reparam: o.directional_reparam ?? false,
    directional_reparam_variance: o.directional_reparam_variance ?? 5e-3,
    sync_update_v: o.sync_update_v ?? 0,
    vq_bridge: o.vq_bridge ?? null,
    in_place_codebook_optimizer: o.in_place_codebook_optimizer ?? null,
    manual_in_place_optimizer_update: o.manual_in_place_optimizer_update ?? false,
  }
}

/** The reference's defaults that depend on these options: DiVeQ and a bridge learn the codebook by gradient. */
export function reparamDefaults(o: ReparamOptions & { readonly dim: number }) {
  const diveq = o.directional_reparam ?? false
  const bridge = (o.vq_bridge ?? null) !== null
  return { ema_update: !diveq && !bridge, learnable_codebook: diveq || bridge, rotation_trick: !diveq && o.dim > 1 }
}

interface Resolved {
  readonly learnable_codebook: boolean
  readonly ema_update: boolean
  readonly use_cosine_sim: boolean
  readonly threshold_ema_dead_code: number
}

/** Each rule of the reference's constructor on these options, as a Left naming the field. */
export function reparamChecks(r: ReparamConfig, c: Resolved, where: string): (() => E.Either<TesseraError, void>)[] {
  const decayIn = (field: 'affine_param_batch_decay' | 'affine_param_codebook_decay') => () =>
    check(r[field] >= 0 && r[field] <= 1, where, field, `must lie in [0, 1], got ${r[field]}`)
  return [
    decayIn('affine_param_batch_decay'),
    decayIn('affine_param_codebook_decay'),
    () => check(!(r.affine_param && c.use_cosine_sim), where, 'affine_param', 'is only compatible with a euclidean codebook (use_cosine_sim: false), as in the reference'),
    () => check(r.directional_reparam_variance >= 0, where, 'directional_reparam_variance', `must be >= 0 (the noise's variance), got ${r.directional_reparam_variance}`),
    () =>
      check(
        !(r.directional_reparam && c.threshold_ema_dead_code === 0),
        where,
        'directional_reparam',
        'needs dead-code replacement (threshold_ema_dead_code > 0), as in the reference',
      ),
    () => check(r.sync_update_v >= 0 && r.sync_update_v <= 1, where, 'sync_update_v', `must lie in [0, 1], got ${r.sync_update_v}`),
    () => check(!(r.sync_update_v > 0 && !c.learnable_codebook), where, 'sync_update_v', 'needs learnable_codebook: true'),
    () => check(!(r.vq_bridge !== null && !c.learnable_codebook), where, 'vq_bridge', 'needs learnable_codebook: true'),
    () => check(!(r.vq_bridge !== null && c.ema_update), where, 'vq_bridge', 'needs ema_update: false'),
    () =>
      check(
        !(r.in_place_codebook_optimizer !== null && !c.learnable_codebook),
        where,
        'in_place_codebook_optimizer',
        'steps the codebook as a parameter, so it needs learnable_codebook: true (the reference also lets it step an orthogonally regularized EMA codebook; Tessera does not)',
      ),
    () =>
      check(
        !(r.manual_in_place_optimizer_update && r.in_place_codebook_optimizer === null),
        where,
        'manual_in_place_optimizer_update',
        'needs in_place_codebook_optimizer',
      ),
  ]
}
