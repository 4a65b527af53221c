import type { Tensor } from '@tessera/core'
import { entropy, foldKey, ranksOf, stack, straightThrough, where } from '@tessera/core'
import type { CodebookState } from '../vq/vector-quantize.js'
import { codebookDistances, embedFromAverages, kmeans, l2norm, oneHot, orthogonalLoss } from '../vq/codebook.js'
import type { VQConfig } from '../vq/config.js'
import { rotateTo } from '../vq/gradient-routing.js'
import { gumbelNoise, requireKey } from '../vq/sampling.js'

/**
 * One ResidualVQ layer's forward as the reference's VectorQuantize runs it inside ResidualVQ when it
 * is handed `topk` (beam search) or a `codebook_transform_fn` (QINCo): nearest codes, or the k best
 * codes of every row, with each candidate's own commitment loss. VectorQuantize's own apply has
 * neither hook, so this module builds them from its exported pieces; key tags are VectorQuantize's
 * (k-means 1, Gumbel 2, orthogonal subset 4) so the same key draws the same numbers.
 */

const TAG_KMEANS = 1
const TAG_GUMBEL = 2
const TAG_ORTHO = 4

/** Below every finite float32: a taken code can never win the next argmax. */
const NEG_MAX = -3.4028234663852886e38

export interface LayerCall {
  readonly cfg: VQConfig
  readonly training: boolean
  readonly freeze: boolean
  readonly temperature: number
  /** this layer's key (already folded per layer) */
  readonly key?: Tensor
  readonly where: string
  /** Beam search: keep this many codes per row (the reference's topk). null: the nearest code only. */
  readonly topk: number | null
  /** (b, n, beams): how the rows are laid out, for the diversity loss's average. */
  readonly layout: readonly [number, number, number]
}

export interface Candidates {
  /** int32 (R, k) codes of each row, best first (k = 1 without topk) */
  readonly ind: Tensor
  /** (R, k, d) the codes, with the layer's gradient routing applied in training */
  readonly quantized: Tensor
  /** (R, k) each candidate's layer loss: weighted commitment plus the layer's scalar terms; 0 in eval */
  readonly loss: Tensor
  /** (R, k) each candidate's commitment (mean squared error); 0 in eval */
  readonly commitment: Tensor
  /**
   * (R, k) what a path's beam score subtracts: `loss` in training; in eval, where the reference's
   * layers return no loss (and its beam search crashes), the weighted commitment training would compute.
   */
  readonly searchLoss: Tensor
  readonly diversity: Tensor
  readonly orthogonal: Tensor
}

/** The reference's k-means init of a layer on its input rows (1, R, d), a no-op once initted. */
export function kmeansInit(cfg: VQConfig, s: CodebookState, flat: Tensor, key: Tensor | undefined, where_: string): CodebookState {
  const k = foldKey(requireKey(key, where_, 'kmeans_init (the first batch picks the initial means)'), TAG_KMEANS)
  const u = flat.builder.randomUniform(k, [flat.shape[0]!, flat.shape[1]!])
  const { means, bins } = kmeans(flat, cfg.codebook_size, cfg.kmeans_iters, cfg.use_cosine_sim, u)
  const avg = means.mul(bins.expandDims(-1))
  const emb = embedFromAverages(bins, avg, cfg.eps, cfg.use_cosine_sim)
  const done = s.initted
  return {
    embed: where(done, s.embed, emb),
    clusterSize: where(done, s.clusterSize, bins),
    embedAvg: where(done, s.embedAvg, avg),
    initted: done.builder.full([], 1, 'bool'),
  }
}

/** The indices of the k largest entries of each row of `logits` (R, K), largest first, first index among ties. */
export function topIndices(logits: Tensor, k: number): Tensor {
  const K = logits.shape[logits.rank - 1]!
  const iota = logits.builder.iota([K], 0)
  const picks: Tensor[] = []
  let cur = logits
  for (let j = 0; j < k; j++) {
    const i = cur.argmax(-1)
    picks.push(i)
    if (j < k - 1) cur = where(i.expandDims(-1).eq(iota), NEG_MAX, cur)
  }
  return stack(picks, -1)
}

/**
 * Candidates of one layer for rows `rows` (R, d) of residuals: against its codebook `embed` (1, K, d),
 * or, for QINCo, against each row's own codebook `codes` (R, K, d), whose distance is torch's
 * `pairwise_distance` (|x - c + 1e-6|).
 */
export function layerCandidates(call: LayerCall, rows: Tensor, embed: Tensor, codes?: Tensor): Candidates {
  const { cfg, training } = call
  const [R, d] = rows.shape as [number, number]
  const K = cfg.codebook_size
  const b = rows.builder
  const cosine = cfg.use_cosine_sim
  const x = cosine ? l2norm(rows) : rows
  const e2 = embed.reshape([K, d])
  const dist = codes
    ? x.expandDims(1).sub(codes).add(1e-6).square().sum(-1).sqrt().neg()
    : codebookDistances(x.expandDims(0), embed, cosine).reshape([R, K])
  const temp = call.temperature
  let logits = dist
  if (training && cfg.stochastic_sample_codes && temp > 0) {
    const key = foldKey(requireKey(call.key, call.where, 'stochastic_sample_codes in training'), TAG_GUMBEL)
    logits = dist.div(temp).add(gumbelNoise(b.randomUniform(key, [R, K])))
  }
  const k = call.topk ?? 1
  const ind = k === 1 ? logits.argmax(-1).expandDims(-1) : topIndices(logits, k) // (R, k)
  let quantized: Tensor
  if (codes) quantized = codes.reshape([R * K, d]).gather(ind.add(b.iota([R, k], 0).mul(K)), 0)
  else if (training && cfg.straight_through && temp > 0) {
    // the soft assignment's gradient, shared by every candidate of the row
    const p = dist.div(temp).softmax(-1).expandDims(1)
    quantized = oneHot(ind, K).add(p).sub(p.stopGradient()).reshape([R * k, K]).matmul(e2).reshape([R, k, d])
  } else quantized = e2.gather(ind, 0)

  const zero = b.scalar(0)
  let diversity = zero, orthogonal = zero
  let commitment = b.full([R, k], 0)
  let loss = commitment
  if (training) {
    const [bb, n, beams] = call.layout
    if (cfg.codebook_diversity_loss_weight > 0) {
      // the reference averages over the leading axes of its distances: the batch without beams,
      // batch and tokens (one entropy per beam) with them
      const prob = dist.mul(cfg.codebook_diversity_temperature).softmax(-1)
      const avg = call.topk === null ? prob.reshape([bb, n, K]).mean(0) : prob.reshape([bb, n, beams, K]).mean([0, 1])
      diversity = entropy(avg).mean().neg()
    }
    if (cfg.commitment_weight > 0) {
      const cq = cfg.learnable_codebook && !call.freeze ? quantized : quantized.stopGradient()
      // with topk the reference compares against the layer's input as given, otherwise the normalized one
      const target = call.topk === null ? x : rows
      commitment = cq.sub(target.expandDims(1)).square().mean(-1)
    }
    if (cfg.orthogonal_reg_weight > 0) {
      let mask: Tensor | undefined
      if (cfg.orthogonal_reg_active_codes_only) mask = oneHot(ind, K).max([0, 1]).gt(0)
      const maxCodes = cfg.orthogonal_reg_max_codes
      if (maxCodes !== null && (mask !== undefined || K > maxCodes)) {
        const key = foldKey(requireKey(call.key, call.where, 'orthogonal_reg_max_codes (random subset of codes)'), TAG_ORTHO)
        let u = b.randomUniform(key, [K])
        if (mask) u = where(mask, u, u.add(2))
        const chosen = ranksOf(u).lt(maxCodes)
        mask = mask ? mask.and(chosen) : chosen
      }
      orthogonal = orthogonalLoss(embed, mask)
    }
    // the reference's order of terms: diversity, commitment, orthogonal
    loss = diversity
      .mul(cfg.codebook_diversity_loss_weight)
      .add(commitment.mul(cfg.commitment_weight))
      .add(orthogonal.mul(cfg.orthogonal_reg_weight))
    if (cfg.route_gradients_to_input) {
      const src = x.expandDims(1).broadcastTo([R, k, d])
      quantized = cfg.rotation_trick ? rotateTo(src, quantized) : straightThrough(src, quantized)
    }
  }
  let searchLoss = loss
  if (!training && call.topk !== null) searchLoss = quantized.sub(rows.expandDims(1)).square().mean(-1).mul(cfg.commitment_weight)
  return { ind, quantized, loss, commitment, diversity, orthogonal, searchLoss }
}
