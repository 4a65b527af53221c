import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { TesseraError } from '@tessera/core'
import { Finite, NonNegInt, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import type { LFQConfig } from '../lfq/config.js'
import { lfqLayerProps, resolveLFQ } from '../lfq/config.js'
import { makeLFQ } from '../lfq/lfq.js'
import type { LFQApplyOptions } from '../lfq/mask.js'
import type { Named, QuantizeResult } from '../quantizer.js'
import type { Tensor } from '@tessera/core'
import type { Residual, ResidualCallOptions } from './residual.js'
import { residual } from './residual.js'

export const ResidualLFQOptions = strict(
  'ResidualLFQ',
  { dim: PositiveInt, num_quantizers: PositiveInt, codebook_size: PositiveInt },
  {
    quantize_dropout: t.boolean,
    quantize_dropout_cutoff_index: NonNegInt,
    quantize_dropout_multiple_of: PositiveInt,
    soft_clamp_input_value: t.union([Finite, t.null]),
    ...lfqLayerProps,
  },
)
export type ResidualLFQOptions = t.TypeOf<typeof ResidualLFQOptions>

export interface ResidualLFQConfig {
  readonly dim: number
  readonly num_quantizers: number
  readonly codebook_size: number
  readonly codebook_dim: number
  readonly quantize_dropout: boolean
  readonly quantize_dropout_cutoff_index: number
  readonly quantize_dropout_multiple_of: number
  /** the resolved config of each layer (codebook_scale 2^-q, soft clamp halved per layer) */
  readonly layers: readonly LFQConfig[]
}

export function decodeResidualLFQ(input: unknown, where = 'ResidualLFQ'): E.Either<TesseraError, ResidualLFQConfig> {
  return decodeWith(ResidualLFQOptions, input, where, (o) => {
    const { dim, num_quantizers: nq, codebook_size, quantize_dropout, quantize_dropout_cutoff_index, quantize_dropout_multiple_of, soft_clamp_input_value, ...rest } = o
    const codebook_dim = Math.round(Math.log2(codebook_size))
    const layers: LFQConfig[] = []
    let soft: number | null = soft_clamp_input_value ?? null
    for (let q = 0; q < nq; q++) {
      const l = resolveLFQ({ ...rest, dim: codebook_dim, codebook_size, codebook_scale: 2 ** -q, soft_clamp_input_value: soft } as never, `${where}.layers.${q}`)
      if (E.isLeft(l)) return l
      layers.push(l.right)
      if (soft !== null) soft *= 0.5
    }
    const cutoff = quantize_dropout_cutoff_index ?? 0
    return checks<ResidualLFQConfig>(
      {
        dim,
        num_quantizers: nq,
        codebook_size,
        codebook_dim,
        quantize_dropout: (quantize_dropout ?? false) && nq > 1,
        quantize_dropout_cutoff_index: cutoff,
        quantize_dropout_multiple_of: quantize_dropout_multiple_of ?? 1,
        layers,
      },
      [() => check(!(quantize_dropout ?? false) || cutoff < nq, where, 'quantize_dropout_cutoff_index', `must be below num_quantizers (${nq})`)],
    )
  })
}

/** Takes LFQ's `mask`, handed unchanged to every layer as the reference's loop does (the residual is updated at masked positions too). */
export interface ResidualLFQ extends Residual<ResidualLFQConfig> {
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: LFQApplyOptions & ResidualCallOptions): QuantizeResult
}

export function makeResidualLFQ(cfg: ResidualLFQConfig): ResidualLFQ {
  const cd = cfg.codebook_dim
  return residual(cfg, {
    kind: 'ResidualLFQ',
    dim: cfg.dim,
    codebookDim: cd,
    layers: cfg.layers.map(makeLFQ),
    projection: { present: cfg.dim !== cd, bias: true, dim: cfg.dim, codebookDims: cd },
    channelFirst: false,
    quantizeDropout: cfg.quantize_dropout ? { cutoffIndex: cfg.quantize_dropout_cutoff_index, multipleOf: cfg.quantize_dropout_multiple_of } : null,
    layerOptions: ['mask'],
  })
}

export const residualLFQ = (options: unknown): E.Either<TesseraError, ResidualLFQ> => E.map(makeResidualLFQ)(decodeResidualLFQ(options))
