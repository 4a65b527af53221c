import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import { Finite, NonNegInt, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import type { ApplyOptions, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { Residual, ResidualCallOptions } from '../residual/residual.js'
import { checkResidualCallOptions, residual } from '../residual/residual.js'
import type { SimVQConfig } from './simvq.js'
import { CodebookInitCodec, CodebookTransformCodec, makeSimVQ, simVQConfigOf } from './simvq.js'

export const ResidualSimVQOptions = strict(
  'ResidualSimVQ',
  { dim: PositiveInt, num_quantizers: PositiveInt, codebook_size: PositiveInt },
  {
    heads: t.literal(1),
    quantize_dropout: t.boolean,
    quantize_dropout_cutoff_index: NonNegInt,
    quantize_dropout_multiple_of: PositiveInt,
    channel_first: t.boolean,
    rotation_trick: t.boolean,
    input_to_quantize_commit_loss_weight: Finite,
    commitment_weight: Finite,
    frozen_codebook_dim: t.union([PositiveInt, t.null]),
    init_fn: t.union([CodebookInitCodec, t.null]),
    codebook_transform: t.union([CodebookTransformCodec, t.null]),
  },
)

export interface ResidualSimVQConfig {
  readonly dim: number
  readonly num_quantizers: number
  readonly channel_first: boolean
  readonly quantize_dropout: { readonly cutoffIndex: number; readonly multipleOf: number } | null
  readonly layer: SimVQConfig
}

export function decodeResidualSimVQ(input: unknown, where = 'ResidualSimVQ'): E.Either<TesseraError, ResidualSimVQConfig> {
  return decodeWith(ResidualSimVQOptions, input, where, (o) => {
    const nq = o.num_quantizers
    const cutoff = o.quantize_dropout_cutoff_index ?? 0
    const dropping = (o.quantize_dropout ?? false) && nq > 1
    const cfg: ResidualSimVQConfig = {
      dim: o.dim,
      num_quantizers: nq,
      channel_first: o.channel_first ?? false,
      quantize_dropout: dropping ? { cutoffIndex: cutoff, multipleOf: o.quantize_dropout_multiple_of ?? 1 } : null,
      // layers see (b, n, d): the combinator handles the channel-first layout; one transform serves
      // every layer, as the reference hands its one module to each (see makeResidualSimVQ)
      layer: simVQConfigOf({ ...o, channel_first: false }),
    }
    return checks(cfg, [
      () => check(!dropping || cutoff < nq, where, 'quantize_dropout_cutoff_index', `must be below num_quantizers (${nq}), got ${cutoff}`),
      () => check(cfg.layer.codebook_size <= 2 ** 24, where, 'codebook_size', 'must be at most 2^24'),
      () => check(cfg.layer.commitment_weight >= 0, where, 'commitment_weight', 'must be >= 0'),
    ])
  })
}

/** ResidualSimVQ: the residual combinator over SimVQ layers (no projections; indices (b, ..., q)). */
export interface ResidualSimVQ extends Quantizer<ResidualSimVQConfig> {
  readonly kind: 'ResidualSimVQ'
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions & ResidualCallOptions): QuantizeResult
  codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
}

export function makeResidualSimVQ(cfg: ResidualSimVQConfig): ResidualSimVQ {
  const W = 'ResidualSimVQ'
  const inner: Residual = residual(cfg, {
    kind: W,
    dim: cfg.dim,
    codebookDim: cfg.dim,
    layers: Array.from({ length: cfg.num_quantizers }, () => makeSimVQ(cfg.layer)),
    projection: { present: false, bias: false, dim: cfg.dim, codebookDims: cfg.dim },
    channelFirst: false,
    quantizeDropout: cfg.quantize_dropout,
  })
  // A custom transform is one module in the reference, shared by every layer: its parameters are
  // stored once, under layer 0's names (as a shared ResidualVQ codebook is), and handed to each layer.
  const shared = Object.keys(inner.paramSpecs).filter((k) => /^layers\.[1-9]\d*\.code_transform\./.test(k) && cfg.layer.codebook_transform !== null)
  const layer0 = (k: string) => k.replace(/^layers\.\d+\./, 'layers.0.')
  const paramSpecs = Object.fromEntries(Object.entries(inner.paramSpecs).filter(([k]) => !shared.includes(k)))
  const expand = (params: Named<Tensor>): Named<Tensor> => (shared.length ? { ...params, ...Object.fromEntries(shared.map((k) => [k, params[layer0(k)]!])) } : params)
  const init = (key: Parameters<Quantizer['init']>[0]) => {
    const r = inner.init(key)
    return { params: Object.fromEntries(Object.entries(r.params).filter(([k]) => !shared.includes(k))), state: r.state }
  }
  const toSeq = (x: Tensor) => {
    if (!cfg.channel_first) return { x, back: (q: Tensor) => q, backIdx: (i: Tensor) => i }
    if (x.rank < 3) throw new TesseraError('shape', W, `channel_first expects (b, d, ...), got [${x.shape.join(',')}]`)
    if (x.shape[1] !== cfg.dim) throw new TesseraError('shape', W, `input has ${x.shape[1]} channels on axis 1; expected dim ${cfg.dim}`)
    const b = x.shape[0]!, spatial = x.shape.slice(2)
    return {
      x: x.reshape([b, cfg.dim, -1]).mT,
      back: (q: Tensor) => q.mT.reshape([b, cfg.dim, ...spatial]),
      backIdx: (i: Tensor) => i.reshape([b, ...spatial, i.shape[2]!]),
    }
  }
  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions & ResidualCallOptions): QuantizeResult => {
    const s = toSeq(x)
    checkResidualCallOptions(opts, W)
    // channel-first: the per-layer codes in this quantizer's own layout, as codesFromIndices gives them, in place of the inner sequence layout's
    const own = cfg.channel_first && opts.returnAllCodes
    const r = inner.apply(expand(params), state, s.x, own ? { ...opts, returnAllCodes: false } : opts)
    const indices = s.backIdx(r.indices)
    const extra = own ? { ...r.extra, all_codes: codesFromIndices(params, indices, r.state) } : r.extra
    return { ...r, quantized: s.back(r.quantized), indices, ...(extra ? { extra } : {}) }
  }
  const codesFromIndices = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    const codes = inner.codesFromIndices(expand(params), indices, state) // (q, b, ..., d)
    return cfg.channel_first ? codes.moveAxis(-1, 2) : codes
  }
  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    const out = inner.indicesToCodes(expand(params), indices, state)
    return cfg.channel_first ? out.moveAxis(-1, 1) : out
  }
  return { kind: W, config: cfg, paramSpecs, stateSpecs: inner.stateSpecs, init, apply, indicesToCodes, codesFromIndices }
}

export const residualSimVQ = (options: unknown): E.Either<TesseraError, ResidualSimVQ> => E.map(makeResidualSimVQ)(decodeResidualSimVQ(options))
