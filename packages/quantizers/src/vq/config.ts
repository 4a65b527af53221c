import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { Finite, MAX_CODEBOOK_SIZE, NonNegInt, PositiveInt, check, checks, decode, strict } from '../config/codec.js'
import type { ReparamConfig } from './reparam-config.js'
import { reparamChecks, reparamConfigOf, reparamDefaults, vqReparamProps } from './reparam-config.js'

/**
 * VectorQuantize's keyword arguments, as vector-quantize-pytorch names them. Options of the
 * reference that Tessera does not implement are not listed, so a config that uses them is refused
 * as an unknown key instead of being silently ignored.
 */
export const vqOptionalProps = {
    codebook_dim: t.union([PositiveInt, t.null]),
    heads: PositiveInt,
    separate_codebook_per_head: t.boolean,
    decay: Finite,
    eps: Finite,
    freeze_codebook: t.boolean,
    kmeans_init: t.boolean,
    kmeans_iters: NonNegInt,
    use_cosine_sim: t.boolean,
    threshold_ema_dead_code: Finite,
    reset_cluster_size: t.union([Finite, t.null]),
    channel_last: t.boolean,
    accept_image_fmap: t.boolean,
    accept_3d_fmap: t.boolean,
    commitment_weight: Finite,
    orthogonal_reg_weight: Finite,
    orthogonal_reg_active_codes_only: t.boolean,
    orthogonal_reg_max_codes: t.union([PositiveInt, t.null]),
    codebook_diversity_loss_weight: Finite,
    codebook_diversity_temperature: Finite,
    stochastic_sample_codes: t.boolean,
    sample_codebook_temp: Finite,
    straight_through: t.boolean,
    rotation_trick: t.union([t.boolean, t.null]),
    ema_update: t.union([t.boolean, t.null]),
    learnable_codebook: t.union([t.boolean, t.null]),
    route_gradients_to_input: t.boolean,
    sync_codebook: t.union([t.boolean, t.null]),
    sync_kmeans: t.boolean,
}

/**
 * Options of VectorQuantize's own forward (losses, masking, the projection's LayerNorm), kept apart
 * from the layer options because not every combinator passes them on: ResidualVQ hands them to its
 * layers (as the reference's `**kwargs`), RandomProjectionQuantizer refuses them as unknown keys.
 */
export const vqOwnProps = {
    commitment_use_cross_entropy_loss: t.boolean,
    return_zeros_for_masked_padding: t.boolean,
    layernorm_after_project_in: t.boolean,
}

export const VQOptions = strict('VectorQuantize', { dim: PositiveInt, codebook_size: PositiveInt }, { ...vqOptionalProps, ...vqOwnProps, ...vqReparamProps })
export type VQOptions = t.TypeOf<typeof VQOptions>

/** VectorQuantize options with every default resolved and every cross-field rule checked. */
export interface VQConfig extends ReparamConfig {
  readonly dim: number
  readonly codebook_size: number
  readonly codebook_dim: number
  readonly heads: number
  readonly separate_codebook_per_head: boolean
  readonly decay: number
  readonly eps: number
  readonly freeze_codebook: boolean
  readonly kmeans_init: boolean
  readonly kmeans_iters: number
  readonly use_cosine_sim: boolean
  readonly threshold_ema_dead_code: number
  readonly reset_cluster_size: number
  readonly channel_last: boolean
  readonly accept_image_fmap: boolean
  readonly accept_3d_fmap: boolean
  readonly commitment_weight: number
  readonly orthogonal_reg_weight: number
  readonly orthogonal_reg_active_codes_only: boolean
  readonly orthogonal_reg_max_codes: number | null
  readonly codebook_diversity_loss_weight: number
  readonly codebook_diversity_temperature: number
  readonly stochastic_sample_codes: boolean
  readonly sample_codebook_temp: number
  readonly straight_through: boolean
  readonly rotation_trick: boolean
  readonly ema_update: boolean
  readonly learnable_codebook: boolean
  readonly route_gradients_to_input: boolean
  /** The commitment loss is the cross entropy of the distance logits against the chosen codes. */
  readonly commitment_use_cross_entropy_loss: boolean
  /** With a forward `mask`: masked-out positions of `quantized` are zeros (else the input). */
  readonly return_zeros_for_masked_padding: boolean
  /** project_in is Linear then LayerNorm (only where projections exist). */
  readonly layernorm_after_project_in: boolean
  /**
   * Sum the EMA statistics over the ranks of a call traced with `world` (docs/DISTRIBUTED.md);
   * null (the reference's default) syncs whenever the call has a world, false never.
   */
  readonly sync_codebook: boolean | null
  /** With a synced codebook: k-means and dead-code rows are drawn and averaged over the global batch. */
  readonly sync_kmeans: boolean
  /** Derived: codebook_dim * heads differs from dim, so project_in/project_out exist. */
  readonly has_projections: boolean
  /** Derived: number of codebooks in `_codebook.embed` (heads when separate, else 1). */
  readonly num_codebooks: number
}

/**
 * The most k-means iterations a config may ask for: the loop is unrolled when the program is traced
 * (about a dozen equations per iteration), so the bound keeps tracing and compiling finite; the
 * reference's default is 10.
 */
export const MAX_KMEANS_ITERS = 1000

export function resolveVQ(o: VQOptions, where = 'VectorQuantize'): E.Either<TesseraError, VQConfig> {
  const heads = o.heads ?? 1
  const codebook_dim = o.codebook_dim ?? o.dim
  const separate = o.separate_codebook_per_head ?? false
  const reparam = reparamConfigOf(o)
  const implied = reparamDefaults(o)
  const learnable = o.learnable_codebook ?? implied.learnable_codebook
  const ema_update = o.ema_update ?? implied.ema_update
  const straight = o.straight_through ?? false
  const rotation = o.rotation_trick ?? implied.rotation_trick
  const threshold = o.threshold_ema_dead_code ?? 0
  const decay = o.decay ?? 0.8
  const cfg: VQConfig = {
    ...reparam,
    dim: o.dim,
    codebook_size: o.codebook_size,
    codebook_dim,
    heads,
    separate_codebook_per_head: separate,
    decay,
    eps: o.eps ?? 1e-5,
    freeze_codebook: o.freeze_codebook ?? false,
    kmeans_init: o.kmeans_init ?? false,
    kmeans_iters: o.kmeans_iters ?? 10,
    use_cosine_sim: o.use_cosine_sim ?? false,
    threshold_ema_dead_code: threshold,
    reset_cluster_size: o.reset_cluster_size ?? threshold,
    channel_last: o.channel_last ?? true,
    accept_image_fmap: o.accept_image_fmap ?? false,
    accept_3d_fmap: o.accept_3d_fmap ?? false,
    commitment_weight: o.commitment_weight ?? 1,
    orthogonal_reg_weight: o.orthogonal_reg_weight ?? 0,
    orthogonal_reg_active_codes_only: o.orthogonal_reg_active_codes_only ?? false,
    orthogonal_reg_max_codes: o.orthogonal_reg_max_codes ?? null,
    codebook_diversity_loss_weight: o.codebook_diversity_loss_weight ?? 0,
    codebook_diversity_temperature: o.codebook_diversity_temperature ?? 100,
    stochastic_sample_codes: o.stochastic_sample_codes ?? false,
    sample_codebook_temp: o.sample_codebook_temp ?? 1,
    straight_through: straight,
    rotation_trick: rotation,
    ema_update,
    learnable_codebook: learnable,
    route_gradients_to_input: o.route_gradients_to_input ?? true,
    commitment_use_cross_entropy_loss: o.commitment_use_cross_entropy_loss ?? false,
    return_zeros_for_masked_padding: o.return_zeros_for_masked_padding ?? true,
    layernorm_after_project_in: o.layernorm_after_project_in ?? false,
    sync_codebook: o.sync_codebook ?? null,
    sync_kmeans: o.sync_kmeans ?? true,
    has_projections: codebook_dim * heads !== o.dim,
    num_codebooks: separate ? heads : 1,
  }
  return checks<VQConfig>(cfg, [
    () => check(cfg.codebook_size <= MAX_CODEBOOK_SIZE, where, 'codebook_size', `must be at most 2^24, got ${cfg.codebook_size}`),
    () => check(decay >= 0 && decay <= 1, where, 'decay', `must lie in [0, 1], got ${decay}`),
    () => check(cfg.eps > 0, where, 'eps', `must be > 0, got ${cfg.eps}`),
    () => check(threshold >= 0, where, 'threshold_ema_dead_code', `must be >= 0, got ${threshold}`),
    () => check(cfg.commitment_weight >= 0, where, 'commitment_weight', `must be >= 0, got ${cfg.commitment_weight}`),
    () => check(cfg.orthogonal_reg_weight >= 0, where, 'orthogonal_reg_weight', `must be >= 0, got ${cfg.orthogonal_reg_weight}`),
    () => check(cfg.codebook_diversity_loss_weight >= 0, where, 'codebook_diversity_loss_weight', 'must be >= 0'),
    () => check(cfg.sample_codebook_temp >= 0, where, 'sample_codebook_temp', `must be >= 0, got ${cfg.sample_codebook_temp}`),
    // the diversity loss divides the distances by this temperature's inverse: 0 or less turns the softmax flat or upside down
    () => check(cfg.codebook_diversity_temperature > 0, where, 'codebook_diversity_temperature', `must be > 0, got ${cfg.codebook_diversity_temperature}`),
    () => check(cfg.reset_cluster_size >= 0, where, 'reset_cluster_size', `must be >= 0 (a revived code's cluster size), got ${cfg.reset_cluster_size}`),
    () => check(cfg.kmeans_iters <= MAX_KMEANS_ITERS, where, 'kmeans_iters', `must be at most ${MAX_KMEANS_ITERS} (each iteration is unrolled into the traced program), got ${cfg.kmeans_iters}`),
    // the reference fails on its first batch here (its k-means returns statistics only from inside the loop)
    () => check(!(cfg.kmeans_init && cfg.kmeans_iters === 0), where, 'kmeans_iters', 'must be at least 1 with kmeans_init (k-means with no iteration has no clusters)'),
    () =>
      check(
        [straight, rotation, reparam.directional_reparam].filter(Boolean).length <= 1,
        where,
        'straight_through',
        'at most one of straight_through, rotation_trick and directional_reparam may be on (rotation_trick defaults to true when dim > 1 without directional_reparam: set it to false)',
      ),
    () => check(!(cfg.use_cosine_sim && learnable), where, 'learnable_codebook', 'a cosine-similarity codebook cannot be learnable'),
    () => check(!(straight && learnable), where, 'straight_through', 'gumbel straight-through is not allowed with a learnable codebook'),
    () => check(!(ema_update && learnable), where, 'ema_update', 'a learnable codebook needs ema_update: false'),
    () =>
      check(
        // VectorQuantize hands the revived codebook back (VQResult.updatedParams); a combinator's layers, resolved under its own name, cannot
        !(learnable && threshold > 0 && where !== 'VectorQuantize'),
        where,
        'threshold_ema_dead_code',
        `dead-code revival rewrites the codebook, which is a learned parameter when learnable_codebook is on; ${where} does not hand it back`,
      ),
    () =>
      check(
        !(learnable && cfg.kmeans_init),
        where,
        'kmeans_init',
        'k-means init rewrites the codebook, which is a learned parameter when learnable_codebook is on; not supported',
      ),
    () => check(!(cfg.accept_image_fmap && cfg.accept_3d_fmap), where, 'accept_3d_fmap', 'accept_image_fmap and accept_3d_fmap exclude each other'),
    () =>
      check(
        !(cfg.orthogonal_reg_active_codes_only && heads > 1 && separate),
        where,
        'orthogonal_reg_active_codes_only',
        'not compatible with multiple heads with separate codebooks (as in the reference)',
      ),
    ...reparamChecks(reparam, cfg, where),
  ])
}

export const decodeVQ = (input: unknown, where = 'VectorQuantize'): E.Either<TesseraError, VQConfig> =>
  pipe(decode(VQOptions, input, where), E.chain((o) => resolveVQ(o, where)))
