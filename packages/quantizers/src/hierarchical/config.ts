import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { Finite, NonNegInt, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import type { VQConfig } from '../vq/config.js'
import { decodeVQ } from '../vq/config.js'

/**
 * HierarchicalVQ's keyword arguments, as vector-quantize-pytorch names them. The VectorQuantize
 * options it forwards keep their names and the defaults HierarchicalVQ gives them (decay 0.99,
 * k-means init, dead-code threshold 2, sample temperature 0.1, no rotation trick).
 */
export const HierarchicalVQOptions = strict(
  'HierarchicalVQ',
  { dim: PositiveInt, codebook_size: PositiveInt, scales: t.array(PositiveInt) },
  {
    decay: Finite,
    commitment_weight: Finite,
    rotation_trick: t.boolean,
    kmeans_init: t.boolean,
    kmeans_iters: NonNegInt,
    threshold_ema_dead_code: Finite,
    stochastic_sample_codes: t.boolean,
    sample_codebook_temp: Finite,
    orthogonal_reg_weight: Finite,
    orthogonal_reg_max_codes: PositiveInt,
    orthogonal_reg_active_codes_only: t.boolean,
    quant_resi: Finite,
    share_quant_resi: t.Int,
    accept_image_fmap: t.boolean,
  },
)
export type HierarchicalVQOptions = t.TypeOf<typeof HierarchicalVQOptions>

export interface HierarchicalVQConfig {
  readonly dim: number
  readonly codebook_size: number
  /** side of each scale's square token map, non-decreasing */
  readonly scales: readonly number[]
  /** |quant_resi|: phi(q) = (1 - r) q + r conv3x3(q); r <= 1e-8 leaves q as it is */
  readonly quant_resi: number
  readonly share_quant_resi: number
  /** the one VectorQuantize every scale shares (accept_image_fmap) */
  readonly vq: VQConfig
  /** Derived: how many phi convolutions there are (0 means one shared, `phi_shared`) */
  readonly phi_levels: number
  /** Derived: which phi each scale uses (an index into phi_levels, or 0 for the shared one) */
  readonly phi_for_scale: readonly number[]
}

/** Python's round(): half to even. */
const roundHalfEven = (v: number): number => {
  const f = Math.floor(v), d = v - f
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1
}

/**
 * The reference's `_choose_phi` as a table: one phi per scale when there are as many as scales,
 * else the scale's relative position rounded (half to even) onto the phi levels.
 */
export function phiForScale(scales: number, levels: number): number[] {
  return Array.from({ length: scales }, (_, i) => {
    if (levels === 0 || levels === scales) return levels === 0 ? 0 : i
    if (scales === 1) return 0
    const position = i / (scales - 1)
    return Math.max(0, Math.min(levels - 1, roundHalfEven(position * (levels - 1))))
  })
}

export function resolveHierarchicalVQ(o: HierarchicalVQOptions, where = 'HierarchicalVQ'): E.Either<TesseraError, HierarchicalVQConfig> {
  const ok = checks(o, [
    // the reference asserts this: HierarchicalVQ only takes image feature maps
    () => check(o.accept_image_fmap === true, where, 'accept_image_fmap', 'HierarchicalVQ expects image feature maps: pass accept_image_fmap: true (as the reference requires)'),
    () => check(o.scales.length > 0, where, 'scales', 'needs at least one scale'),
    () => check(o.scales.every((s, i) => i === 0 || o.scales[i - 1]! <= s), where, 'scales', `must be sorted ascending, got ${JSON.stringify(o.scales)}`),
    // the reference's kmeans() defines its cluster sizes inside the iteration loop: 0 iterations raises there
    () => check(!((o.kmeans_init ?? true) && o.kmeans_iters === 0), where, 'kmeans_iters', 'must be at least 1 with kmeans_init (the reference fails with 0 iterations)'),
  ])
  if (E.isLeft(ok)) return ok
  const vq = decodeVQ(
    {
      dim: o.dim,
      codebook_size: o.codebook_size,
      decay: o.decay ?? 0.99,
      commitment_weight: o.commitment_weight ?? 1,
      rotation_trick: o.rotation_trick ?? false,
      kmeans_init: o.kmeans_init ?? true,
      kmeans_iters: o.kmeans_iters ?? 10,
      threshold_ema_dead_code: o.threshold_ema_dead_code ?? 2,
      stochastic_sample_codes: o.stochastic_sample_codes ?? false,
      sample_codebook_temp: o.sample_codebook_temp ?? 0.1,
      orthogonal_reg_weight: o.orthogonal_reg_weight ?? 0,
      orthogonal_reg_max_codes: o.orthogonal_reg_max_codes ?? 128,
      orthogonal_reg_active_codes_only: o.orthogonal_reg_active_codes_only ?? false,
      accept_image_fmap: true,
    },
    where,
  )
  if (E.isLeft(vq)) return vq
  const n = o.scales.length
  const share = o.share_quant_resi ?? 1
  const levels = share === 1 ? 0 : share <= 0 ? n : Math.min(n, share)
  return E.right({
    dim: o.dim,
    codebook_size: o.codebook_size,
    scales: [...o.scales],
    quant_resi: Math.abs(o.quant_resi ?? 0.5),
    share_quant_resi: share,
    vq: vq.right,
    phi_levels: levels,
    phi_for_scale: phiForScale(n, levels),
  })
}

export const decodeHierarchicalVQ = (input: unknown, where = 'HierarchicalVQ'): E.Either<TesseraError, HierarchicalVQConfig> =>
  decodeWith(HierarchicalVQOptions, input, where, (o) => resolveHierarchicalVQ(o, where))
