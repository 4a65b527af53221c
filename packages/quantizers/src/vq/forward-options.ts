import type { Tensor } from '@tessera/core'
import { TesseraError, fmtShape } from '@tessera/core'
import type { VQConfig } from './config.js'
import { lensToMask } from './mask.js'

/**
 * The reference's EMA weighting (`ema_update_weight`): a number, a float32 (K) or (C, K) tensor
 * (one weight per code), or a function of this batch's statistics (`embed_sum` (C, K, d) and
 * `cluster_size` (C, K)) returning one of those. The EMA step then lerps with weight
 * `(1 - decay) * weight`.
 */
export type EmaUpdateWeight = number | Tensor | ((embedSum: Tensor, clusterSize: Tensor) => number | Tensor)

/**
 * Statistics summed over calls made with `accumEmaUpdate` (the reference keeps them in the
 * `.grad` of its `cluster_size` and `embed_avg` buffers). Tessera has no hidden buffers: an
 * accumulating call returns them as `extra.ema_accum_cluster_size` / `extra.ema_accum_embed_sum`
 * and the caller passes them back as `emaAccum`; the next EMA step adds them to its batch counts.
 */
export interface EmaAccumulator {
  /** (C, K) */
  readonly clusterSize: Tensor
  /** (C, K, codebook_dim) */
  readonly embedSum: Tensor
}

/**
 * VectorQuantize's forward arguments beyond `VQApplyOptions`, under the reference's names in
 * camelCase. Tensors and functions are per-call options, like the rest of the forward's keyword
 * arguments; constructor options stay in the config.
 */
export interface VQForwardOptions {
  /** bool (b, n): tokens that take part (padding is false). Channel-last (b, n, dim) input only. */
  readonly mask?: Tensor
  /** int32 (b): sequence lengths, turned into `mask` (position < length). Excludes `mask`. */
  readonly lens?: Tensor
  /** Return the k nearest codes per token: indices (b, n, k), codes (b, n, k, dim). Training only. */
  readonly topk?: number
  /**
   * int32 target codes, (b, n) or (b, n, heads), -1 ignored: the call returns the cross entropy of
   * the distance logits against them as `loss`, and `quantized` as the reference does then (codes
   * in the codebook's layout, before project_out and masking).
   */
  readonly indices?: Tensor
  /** Weights the EMA step (see EmaUpdateWeight). */
  readonly emaUpdateWeight?: EmaUpdateWeight
  /** Sum this batch's statistics into the accumulator instead of an EMA step (no codebook change). */
  readonly accumEmaUpdate?: boolean
  /** Statistics accumulated by earlier `accumEmaUpdate` calls. */
  readonly emaAccum?: EmaAccumulator
  /** Overrides the config's `ema_update` for this call. */
  readonly emaUpdate?: boolean
  /**
   * The reference's `codebook_transform_fn`, traced into the program: takes the codebook
   * (C, K, codebook_dim) and returns one codebook per token, (C, b', n, K, codebook_dim) where
   * (C, b', n) is the layout of `extra.codebook_input` (b' = b·heads for a shared multi-head codebook).
   */
  readonly codebookTransformFn?: (embed: Tensor) => Tensor
}

/** The checked forward arguments of one call. */
export interface ForwardCall {
  readonly mask?: Tensor
  readonly topk?: number
  readonly targets?: Tensor
  readonly emaUpdateWeight?: EmaUpdateWeight
  readonly accumulate: boolean
  readonly emaAccum?: EmaAccumulator
  readonly emaUpdate: boolean
  readonly transform?: (embed: Tensor) => Tensor
}

const fail = (kind: 'input' | 'shape' | 'dtype', arg: string, msg: string): never => {
  throw new TesseraError(kind, `VectorQuantize.${arg}`, msg)
}

const show = (t: Tensor) => `${t.dtype}${fmtShape(t.shape)}`

const isTensor = (v: unknown): v is Tensor =>
  typeof v === 'object' && v !== null && 'builder' in v && 'shape' in v && 'dtype' in v

/**
 * Checks the forward arguments against the config and the input `x` (its layout: b, n tokens of
 * `x3` = the (b, n, dim) view), refusing what the reference refuses or cannot compute, by name.
 */
export function checkForward(
  cfg: VQConfig,
  x: Tensor,
  tokens: readonly [number, number],
  opts: VQForwardOptions & { readonly training: boolean; readonly sampleCodebookTemp?: number },
): ForwardCall {
  const [b, n] = tokens
  const h = cfg.heads
  const K = cfg.codebook_size
  const plainLayout = x.rank === 3 && cfg.channel_last && !cfg.accept_image_fmap && !cfg.accept_3d_fmap
  const needsPlain = (arg: string) => {
    if (!plainLayout)
      fail('shape', arg, `needs a channel-last (b, n, dim) input (the reference's ${arg} is not defined for single tokens, channel-first input or feature maps), got x ${show(x)}`)
  }
  let mask: Tensor | undefined
  if (opts.mask !== undefined && opts.lens !== undefined) fail('input', 'lens', 'mask and lens exclude each other')
  if (opts.mask !== undefined) {
    if (!isTensor(opts.mask)) fail('input', 'mask', 'must be a bool tensor (b, n)')
    needsPlain('mask')
    if (opts.mask.dtype !== 'bool') fail('dtype', 'mask', `must be bool, got ${show(opts.mask)}`)
    if (opts.mask.rank !== 2 || opts.mask.shape[0] !== b || opts.mask.shape[1] !== n) fail('shape', 'mask', `must be (${b}, ${n}) for x ${fmtShape(x.shape)}, got ${show(opts.mask)}`)
    mask = opts.mask
  }
  if (opts.lens !== undefined) {
    if (!isTensor(opts.lens)) fail('input', 'lens', 'must be an int32 tensor (b)')
    needsPlain('lens')
    if (opts.lens.dtype !== 'int32') fail('dtype', 'lens', `must be int32, got ${show(opts.lens)}`)
    if (opts.lens.rank !== 1 || opts.lens.shape[0] !== b) fail('shape', 'lens', `must be (${b}) for x ${fmtShape(x.shape)}, got ${show(opts.lens)}`)
    mask = lensToMask(opts.lens, n)
  }

  let targets: Tensor | undefined
  if (opts.indices !== undefined) {
    const t = opts.indices
    if (!isTensor(t)) fail('input', 'indices', 'must be an int32 tensor of target codes')
    const want = h === 1 ? [b, n] : [b, n, h]
    if (t.dtype !== 'int32') fail('dtype', 'indices', `must be int32, got ${show(t)}`)
    if (t.rank !== want.length || want.some((s, i) => t.shape[i] !== s))
      fail('shape', 'indices', `target codes must be ${fmtShape(want)} (tokens flattened${h > 1 ? ', heads last' : ''}), got ${show(t)}`)
    targets = t
  }

  const training = opts.training
  const commits = training && cfg.commitment_weight > 0 && targets === undefined
  let topk: number | undefined
  if (opts.topk !== undefined) {
    const k = opts.topk
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 1 || k > K) fail('input', 'topk', `must be an integer in [1, ${K}] (codebook_size), got ${String(k)}`)
    if (!training) fail('input', 'topk', 'the reference returns top-k codes only in training (its eval gather takes one index per token)')
    if (h > 1) fail('input', 'topk', 'the reference does not merge top-k codes of several heads; heads must be 1')
    needsPlain('topk')
    const temp = opts.sampleCodebookTemp ?? cfg.sample_codebook_temp
    if (cfg.straight_through && temp > 0) fail('input', 'topk', 'gumbel straight_through adds (b·n, K) probabilities to (b·n, k, K) one-hots in the reference, which do not broadcast')
    if (commits && cfg.commitment_use_cross_entropy_loss) fail('input', 'topk', 'the cross-entropy commitment loss takes one code per token in the reference')
    if (commits && cfg.has_projections) fail('input', 'topk', 'the reference compares top-k codes with the raw input, which has another width when codebook_dim differs from dim')
    topk = k
  }
  if (mask && commits && !cfg.commitment_use_cross_entropy_loss && topk === undefined && (h > 1 || cfg.has_projections))
    fail('input', 'mask', 'the reference\'s masked commitment loss compares codes with the raw input: defined only for heads 1 without projections (use commitment_weight 0 or the cross-entropy commitment loss)')

  let weight: EmaUpdateWeight | undefined
  const w = opts.emaUpdateWeight
  if (w !== undefined) {
    if (typeof w === 'number') {
      if (!Number.isFinite(w)) fail('input', 'emaUpdateWeight', `must be finite, got ${w}`)
    } else if (isTensor(w)) checkWeightTensor(cfg, w)
    else if (typeof w !== 'function') fail('input', 'emaUpdateWeight', 'must be a number, a float32 (K) or (C, K) tensor, or a function (embedSum, clusterSize) => weight')
    weight = w
  }
  if (opts.accumEmaUpdate !== undefined && typeof opts.accumEmaUpdate !== 'boolean') fail('input', 'accumEmaUpdate', 'must be a boolean')
  const acc = opts.emaAccum
  if (acc !== undefined) {
    const C = cfg.num_codebooks, cd = cfg.codebook_dim
    const ok = (t: unknown, shape: number[]) => isTensor(t) && t.dtype === 'float32' && t.rank === shape.length && shape.every((s, i) => t.shape[i] === s)
    if (typeof acc !== 'object' || acc === null || !ok(acc.clusterSize, [C, K]) || !ok(acc.embedSum, [C, K, cd]))
      fail('shape', 'emaAccum', `must be { clusterSize: float32[${C},${K}], embedSum: float32[${C},${K},${cd}] } (extra.ema_accum_* of an accumulating call)`)
  }
  if (opts.emaUpdate !== undefined && typeof opts.emaUpdate !== 'boolean') fail('input', 'emaUpdate', 'must be a boolean')
  const emaUpdate = opts.emaUpdate ?? cfg.ema_update
  if (emaUpdate && cfg.learnable_codebook) fail('input', 'emaUpdate', 'a learnable codebook is a parameter: the EMA step cannot rewrite it')
  if (opts.codebookTransformFn !== undefined && typeof opts.codebookTransformFn !== 'function')
    fail('input', 'codebookTransformFn', 'must be a function (codebook (C, K, d)) => per-token codebooks (C, b, n, K, d)')
  return {
    ...(mask ? { mask } : {}),
    ...(topk !== undefined ? { topk } : {}),
    ...(targets ? { targets } : {}),
    ...(weight !== undefined ? { emaUpdateWeight: weight } : {}),
    accumulate: opts.accumEmaUpdate ?? false,
    ...(acc ? { emaAccum: acc } : {}),
    emaUpdate,
    ...(opts.codebookTransformFn ? { transform: opts.codebookTransformFn } : {}),
  }
}

/** A weight tensor as the reference's `ema_inplace` takes it: (K) for one codebook, or (C, K). */
export function checkWeightTensor(cfg: VQConfig, w: Tensor): Tensor {
  const C = cfg.num_codebooks, K = cfg.codebook_size
  if (w.dtype !== 'float32') fail('dtype', 'emaUpdateWeight', `must be float32, got ${show(w)}`)
  const ok = (w.rank === 1 && C === 1 && w.shape[0] === K) || (w.rank === 2 && w.shape[0] === C && w.shape[1] === K)
  if (!ok) fail('shape', 'emaUpdateWeight', `a weight tensor must be (${C}, ${K})${C === 1 ? ` or (${K})` : ''} (one weight per code), got ${show(w)}`)
  return w.rank === 1 ? w.expandDims(0) : w
}

/** What the codebook step (`codebookForward`) takes from the forward arguments. */
export interface CodebookExtras {
  /** bool (C, N): rows that take part in k-means, EMA statistics and dead-code draws. */
  readonly rowMask?: Tensor
  readonly topk?: number
  readonly transform?: (embed: Tensor) => Tensor
  /** (C, b', n): how the (C, N) rows unflatten, for the transform's per-token codebooks. */
  readonly layout: readonly [number, number, number]
  readonly emaUpdateWeight?: EmaUpdateWeight
  readonly accumulate: boolean
  readonly emaAccum?: EmaAccumulator
  readonly emaUpdate: boolean
}

/** The codebook step's part of a checked call, with the rows' layout and (C, N) token mask. */
export function codebookExtras(fwd: ForwardCall, layout: readonly [number, number, number], rowMask?: Tensor): CodebookExtras {
  const { mask: _mask, targets: _targets, ...rest } = fwd
  return { ...rest, layout, ...(rowMask ? { rowMask } : {}) }
}
