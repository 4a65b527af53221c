import type * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { Finite, MAX_CODEBOOK_SIZE, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'

/** The CDF activations of the reference's registry (`normal` and `cauchy` through special.ts's erf, erfinv, atan and tan). */
export const FSP_ACTIVATIONS = ['tanh', 'sigmoid', 'normal', 'laplace', 'cauchy'] as const
export type FSPActivation = (typeof FSP_ACTIVATIONS)[number]

/** VectorNorm's targets and weights for mean, variance, skewness and excess kurtosis. */
export interface VectorNormConfig {
  readonly l1_target: number
  readonly l1_weight: number
  readonly l2_target: number
  readonly l2_weight: number
  readonly l3_target: number
  readonly l3_weight: number
  readonly l4_target: number
  readonly l4_weight: number
  readonly eps: number
}

const norm = (o: Partial<VectorNormConfig>): VectorNormConfig => ({
  l1_target: 0, l1_weight: 0.1, l2_target: 1, l2_weight: 0.07, l3_target: 0, l3_weight: 0.06, l4_target: 0, l4_weight: 0.05, eps: 1e-8, ...o,
})

/** The reference's `VectorNorm.build` presets, by name. */
export const VECTOR_NORM_PRESETS: Readonly<Record<string, VectorNormConfig>> = {
  none: norm({ l1_weight: 0, l2_weight: 0, l3_weight: 0, l4_weight: 0 }),
  var: norm({ l3_weight: 0, l4_weight: 0 }),
  kurt: norm({}),
  var_tanh: norm({ l2_target: 0.8225, l3_weight: 0, l4_weight: 0 }),
  var_sigmoid: norm({ l2_target: 3.29, l3_weight: 0, l4_weight: 0 }),
  var_laplace: norm({ l2_target: 2, l3_weight: 0, l4_weight: 0 }),
}

/** FSP's keyword arguments, as the reference names them. */
export const FSPOptions = strict(
  'FSP',
  { levels: t.array(PositiveInt) },
  {
    dim: t.union([PositiveInt, t.null]),
    channel_first: t.boolean,
    projection_has_bias: t.boolean,
    act_name: t.string,
    quantize_rate: Finite,
    need_inv_act: t.boolean,
    vector_norm: t.string,
  },
)
export type FSPOptions = t.TypeOf<typeof FSPOptions>

export interface FSPConfig {
  readonly levels: readonly number[]
  readonly dim: number
  readonly channel_first: boolean
  readonly projection_has_bias: boolean
  readonly act_name: FSPActivation
  readonly quantize_rate: number
  readonly need_inv_act: boolean
  /** the preset's name, as given */
  readonly vector_norm: string
  readonly norm: VectorNormConfig
  readonly codebook_dim: number
  readonly codebook_size: number
  readonly has_projections: boolean
}

export function resolveFSP(o: FSPOptions, where = 'FSP'): E.Either<TesseraError, FSPConfig> {
  const levels = [...o.levels]
  const codebook_dim = levels.length
  const dim = o.dim ?? codebook_dim
  const size = levels.reduce((a, b) => a * b, 1)
  const act = o.act_name ?? 'tanh'
  const rate = o.quantize_rate ?? 0
  const preset = o.vector_norm ?? 'var_tanh'
  const known = (FSP_ACTIVATIONS as readonly string[]).includes(act)
  const hasPreset = Object.prototype.hasOwnProperty.call(VECTOR_NORM_PRESETS, preset)
  return checks<FSPConfig>(
    {
      levels,
      dim,
      channel_first: o.channel_first ?? false,
      projection_has_bias: o.projection_has_bias ?? true,
      act_name: act as FSPActivation,
      quantize_rate: rate,
      need_inv_act: o.need_inv_act ?? false,
      vector_norm: preset,
      norm: hasPreset ? VECTOR_NORM_PRESETS[preset]! : VECTOR_NORM_PRESETS['none']!,
      codebook_dim,
      codebook_size: size,
      has_projections: dim !== codebook_dim,
    },
    [
      () => check(levels.length > 0, where, 'levels', 'must list at least one level'),
      () => check(size <= MAX_CODEBOOK_SIZE, where, 'levels', `the codebook size ${size} (product of levels) exceeds 2^24, the exact-index limit`),
      () =>
        check(
          known,
          where,
          'act_name',
          `unknown CDF activation "${act}"; one of ${FSP_ACTIVATIONS.join(', ')}`,
        ),
      () => check(rate >= 0 && rate <= 1, where, 'quantize_rate', `must be in [0, 1], got ${rate}`),
      () => check(hasPreset, where, 'vector_norm', `unknown preset "${preset}"; one of ${Object.keys(VECTOR_NORM_PRESETS).join(', ')}`),
    ],
  )
}

export const decodeFSP = (input: unknown, where = 'FSP'): E.Either<TesseraError, FSPConfig> => decodeWith(FSPOptions, input, where, (o) => resolveFSP(o, where))
