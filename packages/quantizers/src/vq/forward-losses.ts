import type { Tensor } from '@tessera/core'
import { TesseraError, entropy, foldKey, ranksOf, where } from '@tessera/core'
import { oneHot, orthogonalLoss } from './codebook.js'
import { TAG_ORTHO } from './codebook-forward.js'
import type { VQConfig } from './config.js'
import { crossEntropy } from './cross-entropy.js'
import type { ForwardCall } from './forward-options.js'
import { maskedCommitment, topkCommitment } from './mask.js'
import { requireKey } from './sampling.js'

/** What VectorQuantize's commitment loss reads. */
export interface CommitmentInputs {
  /** The chosen codes, detached unless the codebook learns: (C, N, cd) or (C, N, k, cd). */
  readonly codes: Tensor
  /** The codebook's input rows (C, N, cd). */
  readonly flat: Tensor
  /** Distance logits (C, N, K). */
  readonly dist: Tensor
  /** Chosen codes (C, N) or (C, N, k). */
  readonly ind: Tensor
  /** The raw input as (b, n, dim): the masked and top-k losses compare with it, as the reference does. */
  readonly raw: Tensor
  /** bool (b, n) and its (C, N) rows. */
  readonly mask?: Tensor
  readonly rowMask?: Tensor
  readonly topk?: number
}

/**
 * The reference's commitment loss: the cross entropy of the distance logits against the chosen
 * codes (masked-out tokens ignored) with `commitment_use_cross_entropy_loss`; else, with top-k, the
 * unreduced (b, n, k) squared error against the raw input; with a mask, the mean squared error
 * over the kept tokens against the raw input; else the mean squared error against the codebook input.
 */
export function commitmentLoss(cfg: VQConfig, c: CommitmentInputs): Tensor {
  if (cfg.commitment_use_cross_entropy_loss) return crossEntropy(c.dist, c.rowMask ? where(c.rowMask, c.ind, -1) : c.ind)
  const [b, n] = c.raw.shape as [number, number]
  const cd = c.codes.shape[c.codes.rank - 1]!
  if (c.topk !== undefined) return topkCommitment(c.codes.reshape([b, n, c.topk, cd]), c.raw, c.mask)
  if (c.mask) return maskedCommitment(c.codes.reshape([b, n, cd]), c.raw, c.mask)
  return c.codes.sub(c.flat).square().mean()
}

/**
 * The codes the orthogonal loss covers with `orthogonal_reg_active_codes_only`: the reference's
 * `unique(embed_ind)`, as a (K) weight. Its cross-entropy commitment loss has already set the
 * indices of masked-out tokens to -1 by then, and `codebook[:, -1]` is the last code: given `kept`
 * (the (C, N) row mask in that case), the last code counts once more when a token was masked out.
 */
export function activeCodes(ind: Tensor, k: number, kept?: Tensor, maxCodes?: number | null): Tensor {
  const axes = Array.from({ length: ind.rank }, (_, i) => i)
  if (!kept) return oneHot(ind, k).max(axes).gt(0)
  if (maxCodes !== null && maxCodes !== undefined)
    throw new TesseraError('input', 'VectorQuantize.orthogonal_reg_max_codes', 'with a mask, the cross-entropy commitment loss and orthogonal_reg_active_codes_only the reference draws from a list with a repeated code; not supported')
  const used = where(kept.expandDims(-1), oneHot(ind, k), 0).max(axes)
  const anyDropped = kept.not().cast('float32').max()
  return used.add(oneHot(ind.builder.full([], k - 1, 'int32'), k).mul(anyDropped))
}

/**
 * `quantized` as the reference returns it when given target `indices`: the codes in the codebook's
 * layout, (b, n, [k,] cd) for one head, (C, b', n, cd) for several, before heads merge, before
 * project_out and before masking.
 */
export function codebookLayoutCodes(quantize: Tensor, heads: number, layout: readonly [number, number, number]): Tensor {
  const [c, b, n] = layout
  const rest = quantize.shape.slice(2)
  return heads === 1 ? quantize.reshape([b, n, ...rest]) : quantize.reshape([c, b, n, ...rest])
}

/** What VectorQuantize's training losses read, besides the config. */
export interface TrainingLossInputs {
  /** The codebook's selected codes (C, N, [k,] cd), before any gradient routing. */
  readonly quantize: Tensor
  /** The codebook's input rows (C, N, cd). */
  readonly flat: Tensor
  /** Distance logits (C, N, K) and the same in the reference's layout (C or 1, b', n, K). */
  readonly dist: Tensor
  readonly distRef: Tensor
  /** Chosen codes (C, N) or (C, N, k). */
  readonly ind: Tensor
  /** The raw input as (b, n, dim). */
  readonly raw: Tensor
  /** The codebook the orthogonal loss reads (after the bridge and affine transform). */
  readonly codebook: Tensor
  readonly freeze: boolean
  readonly key?: Tensor
  readonly fwd: ForwardCall
  /** The token mask's (C, N) rows, given with `fwd.mask`. */
  readonly rowMask?: Tensor
  readonly where: string
}

export interface TrainingLosses {
  readonly loss: Tensor
  readonly commitment: Tensor
  readonly diversity: Tensor
  readonly orthogonal: Tensor
}

/**
 * VectorQuantize's training losses, weighted into `loss`: codebook diversity, commitment (none for
 * DiVeQ) and orthogonal regularisation. Given target indices the reference returns their cross
 * entropy instead, so all are zero then.
 */
export function trainingLosses(cfg: VQConfig, t: TrainingLossInputs): TrainingLosses {
  const K = cfg.codebook_size
  const { fwd, rowMask } = t
  const zero = t.flat.builder.scalar(0)
  let commitment = zero, diversity = zero, orthogonal = zero, loss = zero
  if (cfg.codebook_diversity_loss_weight > 0 && !fwd.targets) {
    const prob = t.distRef.mul(cfg.codebook_diversity_temperature).softmax(-1)
    diversity = entropy(prob.mean([0, 1])).mean().neg()
    loss = loss.add(diversity.mul(cfg.codebook_diversity_loss_weight))
  }
  // DiVeQ learns without a commitment loss (the reference's has_commitment_loss)
  if (cfg.commitment_weight > 0 && !fwd.targets && !cfg.directional_reparam) {
    const cq = cfg.learnable_codebook && !t.freeze ? t.quantize : t.quantize.stopGradient()
    commitment = commitmentLoss(cfg, { codes: cq, flat: t.flat, dist: t.dist, ind: t.ind, raw: t.raw, ...(fwd.mask ? { mask: fwd.mask, rowMask: rowMask! } : {}), ...(fwd.topk !== undefined ? { topk: fwd.topk } : {}) })
    loss = loss.add(commitment.mul(cfg.commitment_weight))
  }
  if (cfg.orthogonal_reg_weight > 0 && !fwd.targets) {
    let mask: Tensor | undefined
    // the reference's cross-entropy commitment has set masked-out indices to -1 by now
    const ceMasked = cfg.commitment_weight > 0 && !cfg.directional_reparam && cfg.commitment_use_cross_entropy_loss ? rowMask : undefined
    if (cfg.orthogonal_reg_active_codes_only) mask = activeCodes(t.ind, K, ceMasked, cfg.orthogonal_reg_max_codes)
    const maxCodes = cfg.orthogonal_reg_max_codes
    if (maxCodes !== null && (mask !== undefined || K > maxCodes)) {
      const key = foldKey(requireKey(t.key, t.where, 'orthogonal_reg_max_codes (random subset of codes)'), TAG_ORTHO)
      // random order of the candidate codes: non-candidates are pushed past every candidate
      let u = t.flat.builder.randomUniform(key, [K])
      if (mask) u = where(mask, u, u.add(2))
      const chosen = ranksOf(u).lt(maxCodes)
      mask = mask ? mask.and(chosen) : chosen
    }
    orthogonal = orthogonalLoss(t.codebook, mask)
    loss = loss.add(orthogonal.mul(cfg.orthogonal_reg_weight))
  }
  return { loss, commitment, diversity, orthogonal }
}
