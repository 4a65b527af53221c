import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { Finite, NonNegInt, PositiveInt, Probability, check, checks, decodeWith, strict } from '../config/codec.js'
import { resolveFSQ } from '../fsq/config.js'
import { makeFSQ } from '../fsq/fsq.js'
import type { Residual } from './residual.js'
import { residual } from './residual.js'

export const ResidualFSQOptions = strict(
  'ResidualFSQ',
  { levels: t.array(PositiveInt), num_quantizers: PositiveInt },
  {
    dim: t.union([PositiveInt, t.null]),
    is_channel_first: t.boolean,
    quantize_dropout: t.boolean,
    quantize_dropout_cutoff_index: NonNegInt,
    quantize_dropout_multiple_of: PositiveInt,
    soft_clamp_input_value: t.union([Finite, t.array(Finite), t.null]),
    bound_hard_clamp: t.boolean,
    // forwarded to every FSQ layer
    noise_dropout: Probability,
    orthogonal_rotation: t.boolean,
    force_quantization_f32: t.boolean,
    scale: t.union([t.number, t.null]),
  },
)
export type ResidualFSQOptions = t.TypeOf<typeof ResidualFSQOptions>

export interface ResidualFSQConfig {
  readonly levels: readonly number[]
  readonly num_quantizers: number
  readonly dim: number
  readonly is_channel_first: boolean
  readonly quantize_dropout: boolean
  readonly quantize_dropout_cutoff_index: number
  readonly quantize_dropout_multiple_of: number
  readonly soft_clamp_input_value: readonly number[] | null
  readonly bound_hard_clamp: boolean
  readonly noise_dropout: number
  readonly orthogonal_rotation: boolean
  readonly codebook_size: number
}

const f32 = Math.fround

export function decodeResidualFSQ(input: unknown, where = 'ResidualFSQ'): E.Either<TesseraError, ResidualFSQConfig> {
  return decodeWith(ResidualFSQOptions, input, where, (o) => {
    const levels: number[] = [...o.levels]
    const hard = o.bound_hard_clamp ?? true
    const given = o.soft_clamp_input_value ?? null
    const soft =
      hard ? levels.map((l) => f32(1 + f32(1 / (l - 1)))) : given === null ? null : typeof given === 'number' ? levels.map(() => given) : [...given]
    const nq = o.num_quantizers
    const cutoff = o.quantize_dropout_cutoff_index ?? 0
    return checks<ResidualFSQConfig>(
      {
        levels,
        num_quantizers: nq,
        dim: o.dim ?? levels.length,
        is_channel_first: o.is_channel_first ?? false,
        quantize_dropout: (o.quantize_dropout ?? false) && nq > 1,
        quantize_dropout_cutoff_index: cutoff,
        quantize_dropout_multiple_of: o.quantize_dropout_multiple_of ?? 1,
        soft_clamp_input_value: soft,
        bound_hard_clamp: hard,
        noise_dropout: o.noise_dropout ?? 0,
        orthogonal_rotation: o.orthogonal_rotation ?? false,
        codebook_size: levels.reduce((a, b) => a * b, 1),
      },
      [
        () => check(levels.length > 0 && levels.every((l) => l > 1), where, 'levels', `every level must be > 1, got [${levels.join(', ')}]`),
        () => check(!(hard && given !== null), where, 'soft_clamp_input_value', 'cannot be given with bound_hard_clamp: true (it is derived from the levels)'),
        () => check(soft === null || soft.length === levels.length, where, 'soft_clamp_input_value', `needs one value per level (${levels.length})`),
        // the soft clamp is c·tanh(x / c): 0 makes every output 0 (x / 0 is ±Inf or NaN) and a negative c flips the sign
        () => check(soft === null || soft.every((c) => c > 0), where, 'soft_clamp_input_value', `must be > 0, got ${JSON.stringify(given)}`),
        () => check(!(o.quantize_dropout ?? false) || cutoff < nq, where, 'quantize_dropout_cutoff_index', `must be below num_quantizers (${nq})`),
        () => E.map(() => undefined)(resolveFSQ(layerOptions(levels, hard, o), where)),
      ],
    )
  })
}

const layerOptions = (levels: readonly number[], hard: boolean, o: { noise_dropout?: number; orthogonal_rotation?: boolean }) =>
  ({
    levels,
    preserve_symmetry: true,
    bound_hard_clamp: hard,
    ...(o.noise_dropout !== undefined ? { noise_dropout: o.noise_dropout } : {}),
    ...(o.orthogonal_rotation !== undefined ? { orthogonal_rotation: o.orthogonal_rotation } : {}),
  }) as Parameters<typeof resolveFSQ>[0]

export type ResidualFSQ = Residual<ResidualFSQConfig>

/** scales[q] = levels^-q in float32, as torch's `levels.float() ** -q`. */
export const residualFSQScales = (levels: readonly number[], nq: number): number[][] =>
  Array.from({ length: nq }, (_, q) => levels.map((l) => f32(l ** -q)))

export function makeResidualFSQ(cfg: ResidualFSQConfig): ResidualFSQ {
  const layerCfg = resolveFSQ(layerOptions(cfg.levels, cfg.bound_hard_clamp, cfg))
  if (E.isLeft(layerCfg)) throw layerCfg.left
  const cd = cfg.levels.length
  return residual(cfg, {
    kind: 'ResidualFSQ',
    dim: cfg.dim,
    codebookDim: cd,
    layers: Array.from({ length: cfg.num_quantizers }, () => makeFSQ(layerCfg.right)),
    projection: { present: cfg.dim !== cd, bias: true, dim: cfg.dim, codebookDims: cd },
    channelFirst: cfg.is_channel_first,
    scales: residualFSQScales(cfg.levels, cfg.num_quantizers),
    softClamp: cfg.soft_clamp_input_value,
    quantizeDropout: cfg.quantize_dropout ? { cutoffIndex: cfg.quantize_dropout_cutoff_index, multipleOf: cfg.quantize_dropout_multiple_of } : null,
  })
}

export const residualFSQ = (options: unknown): E.Either<TesseraError, ResidualFSQ> => E.map(makeResidualFSQ)(decodeResidualFSQ(options))
