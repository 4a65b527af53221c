import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, adaptiveAvgPool2d, concat, conv2d, fanInUniform, prefixed, random, resize, scoped, stack } from '@tessera/core'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import { layerKey } from '../residual/residual.js'
import type { VectorQuantize } from '../vq/vector-quantize.js'
import { makeVectorQuantize } from '../vq/vector-quantize.js'
import type { HierarchicalVQConfig } from './config.js'
import { decodeHierarchicalVQ } from './config.js'

export interface HierarchicalVQApplyOptions extends ApplyOptions {
  /** The reference's forward argument `sample_codebook_temp`: overrides the config's for this call. */
  readonly sampleCodebookTemp?: number
}

/**
 * HierarchicalVQ (vector-quantize-pytorch's multi-scale residual quantizer of image feature maps):
 * for each scale s, the residual is average-pooled to s x s, quantized by one shared
 * VectorQuantize, resized back bilinearly, passed through a residual 3x3 convolution phi and
 * subtracted from the residual; the output is the sum over scales.
 *
 * `indices` is every scale's (b, s, s) map flattened and concatenated: (b, Σ s²), int32; `extra`
 * also holds each scale's map as `indices.{i}` and the per-scale intermediates `scale{i}_*`.
 */
export interface HierarchicalVQ extends Quantizer<HierarchicalVQConfig> {
  readonly kind: 'HierarchicalVQ'
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: HierarchicalVQApplyOptions): QuantizeResult
  /** (b, Σ s²) indices -> the reference's get_output_from_indices: (b, dim, S, S), S the last scale. */
  indicesToCodes(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
  /** The reference's get_output_from_indices on one (b, s, s) map per scale. */
  outputFromIndices(params: Named<Tensor>, indices: readonly Tensor[], state?: Named<Tensor>): Tensor
  /** (b, Σ s²) -> one (b, s, s) map per scale. */
  splitIndices(indices: Tensor): Tensor[]
}

const W = 'HierarchicalVQ'
const VQ = 'vq.'

/** State-dict prefix of phi number k (`phi_shared.` when one phi is shared by every scale). */
export const phiPrefix = (cfg: HierarchicalVQConfig, k: number): string => (cfg.phi_levels === 0 ? 'phi_shared.conv.' : `phi_levels.${k}.conv.`)

export function makeHierarchicalVQ(cfg: HierarchicalVQConfig): HierarchicalVQ {
  const d = cfg.dim
  const scales = cfg.scales
  const vq: VectorQuantize = makeVectorQuantize(cfg.vq)
  const phis = Array.from({ length: Math.max(cfg.phi_levels, 1) }, (_, k) => phiPrefix(cfg, k))
  const convSpecs = (p: string): Record<string, Aval> => ({
    [`${p}weight`]: { shape: [d, d, 3, 3], dtype: 'float32' },
    [`${p}bias`]: { shape: [d], dtype: 'float32' },
  })
  const paramSpecs: Record<string, Aval> = { ...prefixed(vq.paramSpecs, VQ), ...Object.assign({}, ...phis.map(convSpecs)) }
  const stateSpecs: Record<string, Aval> = prefixed(vq.stateSpecs, VQ)

  const init = (key: random.Key): Init => {
    const keys = random.splitKey(key, 1 + 2 * phis.length)
    const v = vq.init(keys[0]!)
    const params: Record<string, HostTensor> = prefixed(v.params, VQ)
    // torch.nn.Conv2d's default init: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = dim * 3 * 3
    phis.forEach((p, k) => {
      params[`${p}weight`] = fanInUniform(keys[1 + 2 * k]!, [d, d, 3, 3], d * 9)
      params[`${p}bias`] = fanInUniform(keys[2 + 2 * k]!, [d], d * 9)
    })
    return { params, state: prefixed(v.state, VQ) }
  }

  const param = (params: Named<Tensor>, name: string, op: string): Tensor => {
    const t = params[name]
    if (!t) throw new TesseraError('input', `${W}.${op}`, `missing parameter ${name}`)
    return t
  }

  /** Resize a scale's codes to the full map (when not already that size), then its phi. */
  const upsample = (params: Named<Tensor>, q: Tensor, hw: readonly [number, number], scale: number, op: string): Tensor => {
    const full = q.shape[2] === hw[0] && q.shape[3] === hw[1] ? q : resize(q, hw, { mode: 'bilinear', alignCorners: false })
    const r = cfg.quant_resi
    if (r <= 1e-8) return full
    const p = phis[cfg.phi_for_scale[scale]!]!
    const conv = conv2d(full, param(params, `${p}weight`, op), { bias: param(params, `${p}bias`, op), padding: 1 })
    return full.mul(1 - r).add(conv.mul(r))
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: HierarchicalVQApplyOptions): QuantizeResult => {
    if (x.dtype !== 'float32') throw new TesseraError('dtype', W, `input must be float32, got ${x.dtype}`)
    if (x.rank !== 4) throw new TesseraError('shape', W, `expects an image feature map (batch, channels, height, width), got [${x.shape.join(',')}]`)
    if (x.shape[1] !== d) throw new TesseraError('shape', W, `input [${x.shape.join(',')}] has ${x.shape[1]} channels; expected dim ${d}`)
    const hw = [x.shape[2]!, x.shape[3]!] as const
    const vqParams = scoped(params, VQ)
    let vqState: Named<Tensor> = scoped(state, VQ)
    let residual = x
    let recon: Tensor | undefined
    const indices: Tensor[] = [], scaleLosses: Tensor[] = []
    const losses: Record<string, Tensor> = {}
    const extra: Record<string, Tensor> = {}
    scales.forEach((s, i) => {
      const down = adaptiveAvgPool2d(residual, [s, s])
      // one VectorQuantize for every scale: its state (EMA, k-means flag) threads through the scales
      const r = vq.apply(vqParams, vqState, down, {
        training: opts.training,
        ...(opts.key ? { key: layerKey(opts.key, i) } : {}),
        ...(opts.sampleCodebookTemp !== undefined ? { sampleCodebookTemp: opts.sampleCodebookTemp } : {}),
        // every scale's rows are this rank's images: the shared codebook syncs as a plain VectorQuantize's
        ...(opts.world ? { world: opts.world } : {}),
      })
      vqState = r.state
      const up = upsample(params, r.quantized, hw, i, 'apply')
      recon = recon ? recon.add(up) : up
      residual = residual.sub(up)
      indices.push(r.indices)
      scaleLosses.push(r.loss)
      losses[`scale${i}`] = r.loss
      Object.assign(losses, prefixed(r.losses, `scale${i}.`))
      Object.assign(extra, {
        [`indices.${i}`]: r.indices,
        [`scale${i}_vq_input`]: down,
        [`scale${i}_codebook_dist`]: r.extra!['codebook_dist']!,
        [`scale${i}_quantized`]: r.quantized,
        [`scale${i}_upsampled`]: up,
      })
    })
    const b = x.shape[0]!
    return {
      quantized: recon!,
      indices: concat(indices.map((t) => t.reshape([b, -1])), 1),
      loss: stack(scaleLosses, 0).mean(),
      losses,
      state: prefixed(vqState, VQ),
      extra,
    }
  }

  const splitIndices = (indices: Tensor): Tensor[] => {
    const total = scales.reduce((a, s) => a + s * s, 0)
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${W}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    if (indices.rank !== 2 || indices.shape[1] !== total)
      throw new TesseraError('shape', `${W}.indicesToCodes`, `indices must be (batch, ${total}): scales ${JSON.stringify(scales)} flattened and concatenated; got [${indices.shape.join(',')}]`)
    let off = 0
    return scales.map((s) => {
      const t = indices.sliceAxis(1, off, off + s * s).reshape([indices.shape[0]!, s, s])
      off += s * s
      return t
    })
  }

  const outputFromIndices = (params: Named<Tensor>, list: readonly Tensor[], state?: Named<Tensor>): Tensor => {
    if (list.length !== scales.length)
      throw new TesseraError('input', `${W}.outputFromIndices`, `needs one index map per scale (${scales.length}), got ${list.length}`)
    const last = scales[scales.length - 1]!
    let out: Tensor | undefined
    list.forEach((ind, i) => {
      if (ind.rank !== 3) throw new TesseraError('shape', `${W}.outputFromIndices`, `indices ${i} must be (batch, height, width), got [${ind.shape.join(',')}]`)
      const q = vq.indicesToCodes(scoped(params, VQ), ind, state ? scoped(state, VQ) : undefined)
      const up = upsample(params, q, [last, last], i, 'outputFromIndices')
      out = out ? out.add(up) : up
    })
    return out!
  }

  return {
    kind: 'HierarchicalVQ',
    config: cfg,
    paramSpecs,
    stateSpecs,
    init,
    apply,
    indicesToCodes: (params, indices, state) => outputFromIndices(params, splitIndices(indices), state),
    outputFromIndices,
    splitIndices,
  }
}

/** Build a HierarchicalVQ from the reference's keyword arguments; a bad config is a Left naming the field. */
export const hierarchicalVQ = (options: unknown): E.Either<TesseraError, HierarchicalVQ> => E.map(makeHierarchicalVQ)(decodeHierarchicalVQ(options))
