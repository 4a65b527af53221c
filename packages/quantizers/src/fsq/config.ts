import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { MAX_CODEBOOK_SIZE, PositiveInt, Probability, check, checks, decode, strict } from '../config/codec.js'

/** FSQ's keyword arguments, as vector-quantize-pytorch names them. */
export const FSQOptions = strict(
  'FSQ',
  { levels: t.array(PositiveInt) },
  {
    dim: t.union([PositiveInt, t.null]),
    num_codebooks: PositiveInt,
    keep_num_codebooks_dim: t.union([t.boolean, t.null]),
    scale: t.union([t.number, t.null]), // accepted and unused, as in the reference
    channel_first: t.boolean,
    projection_has_bias: t.boolean,
    return_indices: t.boolean,
    force_quantization_f32: t.boolean, // float32 is the only precision here
    preserve_symmetry: t.boolean,
    noise_dropout: Probability,
    bound_hard_clamp: t.boolean,
    orthogonal_rotation: t.boolean,
  },
)
export type FSQOptions = t.TypeOf<typeof FSQOptions>

/** FSQ options with every default resolved and every cross-field rule checked. */
export interface FSQConfig {
  readonly levels: readonly number[]
  readonly dim: number
  readonly num_codebooks: number
  readonly keep_num_codebooks_dim: boolean
  readonly channel_first: boolean
  readonly projection_has_bias: boolean
  readonly return_indices: boolean
  readonly preserve_symmetry: boolean
  readonly noise_dropout: number
  readonly bound_hard_clamp: boolean
  readonly orthogonal_rotation: boolean
  readonly codebook_dim: number
  readonly codebook_size: number
  readonly has_projections: boolean
}

export function resolveFSQ(o: FSQOptions, where = 'FSQ'): E.Either<TesseraError, FSQConfig> {
  const levels: number[] = [...o.levels]
  const num_codebooks = o.num_codebooks ?? 1
  const keep = o.keep_num_codebooks_dim ?? num_codebooks > 1
  const codebook_dim = levels.length
  const dim = o.dim ?? codebook_dim * num_codebooks
  const size = levels.reduce((a, b) => a * b, 1)
  const preserve = o.preserve_symmetry ?? false
  const noise = o.noise_dropout ?? 0
  return checks<FSQConfig>(
    {
      levels,
      dim,
      num_codebooks,
      keep_num_codebooks_dim: keep,
      channel_first: o.channel_first ?? false,
      projection_has_bias: o.projection_has_bias ?? true,
      return_indices: o.return_indices ?? true,
      preserve_symmetry: preserve,
      noise_dropout: noise,
      bound_hard_clamp: o.bound_hard_clamp ?? false,
      orthogonal_rotation: o.orthogonal_rotation ?? false,
      codebook_dim,
      codebook_size: size,
      has_projections: dim !== codebook_dim * num_codebooks,
    },
    [
      () => check(levels.length > 0, where, 'levels', 'must list at least one level'),
      () => check(levels.every((l) => l >= 2), where, 'levels', `every level must be >= 2, got [${levels.join(', ')}]`),
      () =>
        check(
          preserve || !levels.includes(2),
          where,
          'levels',
          'a level of 2 needs preserve_symmetry: true (without it, the two codes collapse onto one)',
        ),
      () => check(noise === 0 || preserve, where, 'noise_dropout', 'noise_dropout > 0 needs preserve_symmetry: true'),
      () =>
        check(
          num_codebooks === 1 || keep,
          where,
          'keep_num_codebooks_dim',
          'must be true (or left out) when num_codebooks > 1',
        ),
      () =>
        check(size <= MAX_CODEBOOK_SIZE, where, 'levels', `the codebook size ${size} (product of levels) exceeds 2^24, the exact-index limit`),
    ],
  )
}

export const decodeFSQ = (input: unknown, where = 'FSQ'): E.Either<TesseraError, FSQConfig> =>
  pipe(decode(FSQOptions, input, where), E.chain((o) => resolveFSQ(o, where)))
