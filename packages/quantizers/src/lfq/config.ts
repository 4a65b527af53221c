import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import type { ActivationOption } from '../common/activation.js'
import { ActivationOption as ActivationCodec } from '../common/activation.js'
import { Finite, FractionOpen0, PositiveInt, check, checks, decode, isPow2, strict } from '../config/codec.js'

/** The LFQ options that do not fix its shape: a ResidualLFQ forwards these to every layer. */
export const lfqLayerProps = {
  entropy_loss_weight: Finite,
  commitment_loss_weight: Finite,
  diversity_gamma: Finite,
  frac_per_sample_entropy: FractionOpen0,
  projection_has_bias: t.boolean,
  experimental_softplus_entropy_loss: t.boolean,
  entropy_loss_offset: Finite,
  spherical: t.boolean,
  force_quantization_f32: t.boolean,
  orthogonal_rotation: t.boolean,
  /** forward(x, inv_temperature=100.) in the reference */
  inv_temperature: Finite,
  /** applied to the input before the straight-through step in training: only the gradient changes */
  straight_through_activation: ActivationCodec,
}

/** LFQ's keyword arguments as the reference names them, plus the forward's `inv_temperature`. */
export const LFQOptions = strict(
  'LFQ',
  {},
  {
    dim: t.union([PositiveInt, t.null]),
    codebook_size: t.union([PositiveInt, t.null]),
    num_codebooks: PositiveInt,
    keep_num_codebooks_dim: t.union([t.boolean, t.null]),
    codebook_scale: Finite,
    has_projections: t.union([t.boolean, t.null]),
    soft_clamp_input_value: t.union([Finite, t.null]),
    cosine_sim_project_in: t.boolean,
    cosine_sim_project_in_scale: t.union([Finite, t.null]),
    channel_first: t.union([t.boolean, t.null]),
    ...lfqLayerProps,
  },
)
export type LFQOptions = t.TypeOf<typeof LFQOptions>

export interface LFQConfig {
  readonly dim: number
  readonly codebook_size: number
  readonly codebook_dim: number
  readonly num_codebooks: number
  readonly keep_num_codebooks_dim: boolean
  readonly entropy_loss_weight: number
  readonly commitment_loss_weight: number
  readonly diversity_gamma: number
  readonly codebook_scale: number
  readonly frac_per_sample_entropy: number
  readonly has_projections: boolean
  readonly projection_has_bias: boolean
  readonly soft_clamp_input_value: number | null
  /** the CosineSimLinear scale, or null for a plain linear project_in */
  readonly cosine_sim_project_in_scale: number | null
  readonly channel_first: boolean | null
  readonly experimental_softplus_entropy_loss: boolean
  readonly entropy_loss_offset: number
  readonly spherical: boolean
  readonly orthogonal_rotation: boolean
  readonly inv_temperature: number
  /** null is the reference's default nn.Identity() */
  readonly straight_through_activation: ActivationOption
}

/** codebook_dim bits of an index must be exact int32 and the codebook buffer must fit in memory. */
export const MAX_LFQ_CODEBOOK_DIM = 20

export function resolveLFQ(o: LFQOptions, where = 'LFQ'): E.Either<TesseraError, LFQConfig> {
  const hasSize = o.codebook_size !== undefined && o.codebook_size !== null
  const hasDim = o.dim !== undefined && o.dim !== null
  const num_codebooks = o.num_codebooks ?? 1
  const codebook_size = hasSize ? (o.codebook_size as number) : hasDim ? 2 ** (o.dim as number) : 0
  const codebook_dim = Math.round(Math.log2(Math.max(codebook_size, 1)))
  const codebook_dims = codebook_dim * num_codebooks
  const dim = hasDim ? (o.dim as number) : codebook_dims
  const has_projections = o.has_projections ?? dim !== codebook_dims
  const codebook_scale = o.codebook_scale ?? 1
  const cos = o.cosine_sim_project_in ?? false
  const soft = o.soft_clamp_input_value ?? null
  return checks<LFQConfig>(
    {
      dim,
      codebook_size,
      codebook_dim,
      num_codebooks,
      keep_num_codebooks_dim: o.keep_num_codebooks_dim ?? num_codebooks > 1,
      entropy_loss_weight: o.entropy_loss_weight ?? 0.1,
      commitment_loss_weight: o.commitment_loss_weight ?? 0,
      diversity_gamma: o.diversity_gamma ?? 1,
      codebook_scale,
      frac_per_sample_entropy: o.frac_per_sample_entropy ?? 1,
      has_projections,
      projection_has_bias: o.projection_has_bias ?? true,
      soft_clamp_input_value: soft,
      cosine_sim_project_in_scale: cos ? (o.cosine_sim_project_in_scale ?? codebook_scale) : null,
      channel_first: o.channel_first ?? null,
      experimental_softplus_entropy_loss: o.experimental_softplus_entropy_loss ?? false,
      entropy_loss_offset: o.entropy_loss_offset ?? 5,
      spherical: o.spherical ?? false,
      orthogonal_rotation: o.orthogonal_rotation ?? false,
      inv_temperature: o.inv_temperature ?? 100,
      straight_through_activation: o.straight_through_activation ?? null,
    },
    [
      () => check(hasSize || hasDim, where, 'codebook_size', 'either dim or codebook_size must be given'),
      () => check(!hasSize || isPow2(codebook_size), where, 'codebook_size', `must be a power of 2, got ${o.codebook_size}`),
      () => check(codebook_dim >= 1, where, 'codebook_size', `must be at least 2, got ${codebook_size}`),
      () => check(codebook_dim <= MAX_LFQ_CODEBOOK_DIM, where, 'codebook_size', `must be at most 2^${MAX_LFQ_CODEBOOK_DIM}, got 2^${codebook_dim}`),
      () =>
        check(
          has_projections || dim === codebook_dims,
          where,
          'dim',
          `dim ${dim} is inconsistent with codebook_size ${codebook_size} and num_codebooks ${num_codebooks} (log2(codebook_size) * num_codebooks = ${codebook_dims}) when has_projections is false`,
        ),
      () => check(num_codebooks === 1 || (o.keep_num_codebooks_dim ?? true), where, 'keep_num_codebooks_dim', 'must be true (or left out) when num_codebooks > 1'),
      () => check(codebook_scale > 0, where, 'codebook_scale', `must be positive, got ${codebook_scale}`),
      () => check(soft === null || soft >= codebook_scale, where, 'soft_clamp_input_value', `must be >= codebook_scale (${codebook_scale}), got ${soft}`),
      () => check((o.commitment_loss_weight ?? 0) >= 0, where, 'commitment_loss_weight', 'must be >= 0'),
      () => check((o.inv_temperature ?? 100) > 0, where, 'inv_temperature', 'must be positive'),
    ],
  )
}

export const decodeLFQ = (input: unknown, where = 'LFQ'): E.Either<TesseraError, LFQConfig> =>
  pipe(decode(LFQOptions, input, where), E.chain((o) => resolveLFQ(o, where)))
