import type { Tensor } from '@tessera/core'
import { where } from '@tessera/core'
import { sampleMaskedRows, sampleRows } from './sampling.js'
import type { RankSync } from './sync.js'
import { gatherRows, localRowIndex, sampleRowsSynced, sumOverRanks } from './sync.js'

/**
 * The reference's `Codebook` (euclidean or cosine) as pure functions over tensors of shape
 * (C, N, d) for inputs and (C, K, d) for codebooks, C being the number of codebooks. Every
 * buffer update returns new tensors; nothing is written in place.
 */

const f32 = Math.fround

/** x / max(||x||, eps) along the last axis: torch's F.normalize with the reference's eps 1e-6. */
export const l2norm = (x: Tensor, eps = 1e-6): Tensor => x.l2Normalize(-1, eps)

/**
 * Negative euclidean distance -sqrt(clamp(|x|²+|e|²-2x·e, 1e-8)) (C, N, K), term order as in the
 * reference's cdist, or the cosine similarity x·e for a cosine codebook.
 */
export function codebookDistances(x: Tensor, embed: Tensor, cosine: boolean): Tensor {
  const xe = x.matmul(embed.mT) // (C, N, K)
  if (cosine) return xe
  const x2 = x.square().sum(-1, true) // (C, N, 1)
  const e2 = embed.square().sum(-1).expandDims(1) // (C, 1, K)
  return x2.add(e2).add(xe.mul(-2)).maximum(1e-8).sqrt().neg()
}

/** One-hot (..., K) float32 of int32 indices. */
export function oneHot(ind: Tensor, k: number): Tensor {
  return ind.expandDims(-1).eq(ind.builder.iota([k], 0)).cast('float32')
}

/** Rows of `embed` (C, K, d) picked per codebook by `ind` (C, ...): (C, ..., d). */
export function gatherCodes(embed: Tensor, ind: Tensor): Tensor {
  const [c, k, d] = embed.shape as [number, number, number]
  if (c === 1) return embed.reshape([k, d]).gather(ind.squeeze(0), 0).expandDims(0)
  const offsets = ind.builder.iota([c, ...ind.shape.slice(1)], 0).mul(k)
  return embed.reshape([c * k, d]).gather(ind.add(offsets), 0)
}

/**
 * torch's `lerp_(end, w)` in float32 as its CPU kernel computes it: `a + w·(b − a)` for w < 0.5,
 * else `b − (b − a)·(1 − w)`.
 */
export function lerp(a: Tensor, b: Tensor, weight: number): Tensor {
  const w = f32(weight)
  return w < 0.5 ? a.add(b.sub(a).mul(w)) : b.sub(b.sub(a).mul(f32(1 - w)))
}

export interface CodebookBuffers {
  readonly embed: Tensor // (C, K, d)
  readonly clusterSize: Tensor // (C, K)
  readonly embedAvg: Tensor // (C, K, d)
}

/** `laplace_smoothing(cs, K, eps) * cs.sum()`, then `embed = embed_avg / that` (and l2norm for cosine). */
export function embedFromAverages(clusterSize: Tensor, embedAvg: Tensor, eps: number, cosine: boolean): Tensor {
  const k = clusterSize.shape[clusterSize.rank - 1]!
  const total = clusterSize.sum(-1, true)
  const smoothed = clusterSize.add(eps).div(total.add(f32(k * eps))).mul(total)
  const e = embedAvg.div(smoothed.expandDims(-1))
  return cosine ? l2norm(e) : e
}

/**
 * The EMA statistics step (`track_cluster_size_and_embed_avg`): counts and sums of the rows
 * assigned to each code, folded into `cluster_size` and `embed_avg` with weight 1 - decay.
 */
export function trackStatistics(
  buf: CodebookBuffers,
  flat: Tensor,
  ind: Tensor,
  decay: number,
  sync?: RankSync,
): { clusterSize: Tensor; embedAvg: Tensor } {
  const k = buf.clusterSize.shape[1]!
  const onehot = oneHot(ind, k) // (C, N, K)
  // the reference's all_reduce of cluster_size and embed_sum (sync_codebook)
  const counts = sumOverRanks(onehot.sum(1), sync) // (C, K)
  const sums = sumOverRanks(onehot.mT.matmul(flat), sync) // (C, K, d)
  const w = 1 - decay
  return { clusterSize: lerp(buf.clusterSize, counts, w), embedAvg: lerp(buf.embedAvg, sums, w) }
}

/**
 * Where dead codes get their rows: `u` (C, N), uniform draws that order the batch rows; or `rows`
 * (C, M) int32, a recorded draw of the reference (the rows its `replace` gave the expired codes, in
 * code order), which the golden runner replays.
 */
export type ExpiryDraw =
  | {
      readonly u: Tensor
      readonly rowMask?: Tensor
      /** Synced: `u` orders the global rows (C, total), and this rank's rows sit at `index` (default rank·N + j). */
      readonly sync?: RankSync
      readonly index?: Tensor
    }
  | { readonly rows: Tensor }

/**
 * Dead-code revival (`expire_codes_`): codes whose cluster size fell below `threshold` get a
 * random row of this batch (distinct rows while there are enough), `cluster_size = reset` and
 * `embed_avg = row · reset`.
 */
export function expireCodes(
  buf: CodebookBuffers,
  flat: Tensor,
  threshold: number,
  reset: number,
  cosine: boolean,
  draw: ExpiryDraw,
): CodebookBuffers {
  const k = buf.clusterSize.shape[1]!
  const samples = cosine ? l2norm(flat) : flat
  let expired = buf.clusterSize.lt(threshold) // (C, K)
  // with a token mask only kept rows are drawn, and a codebook with none revives nothing (the reference skips it)
  const drawn = 'u' in draw ? draw : undefined
  const rowMask = drawn?.rowMask
  const sync = drawn?.sync
  if (rowMask) {
    // synced: a codebook revives codes when any rank holds a kept row
    const anyKept = sync ? gatherRows(rowMask, drawn!.index ?? localRowIndex(sync, flat.shape[1]!), drawn!.u.shape[1]!, sync) : rowMask.cast('float32')
    expired = expired.and(anyKept.max(-1, true).gt(0))
  }
  let sampled: Tensor // (C, K, d)
  if (!('u' in draw)) sampled = recordedRows(samples, expired, draw.rows)
  else if (sync) sampled = sampleRowsSynced(samples, k, { u: draw.u, ...(draw.index ? { index: draw.index } : {}), ...(rowMask ? { mask: rowMask } : {}) }, sync)
  else sampled = rowMask ? sampleMaskedRows(samples, k, draw.u, rowMask) : sampleRows(samples, k, draw.u)
  const ex3 = expired.expandDims(-1)
  return {
    embed: where(ex3, sampled, buf.embed),
    clusterSize: where(expired, buf.clusterSize.fullLike(f32(reset)), buf.clusterSize),
    embedAvg: where(ex3, sampled.mul(f32(reset)), buf.embedAvg),
  }
}

/**
 * The rows a recorded draw gave the expired codes (C, K, d): the j-th expired code of codebook c,
 * in code order, gets row `rows[c, j]` of `samples[c]`, as the reference's `replace` assigns its
 * sampled rows. Rows of codes that did not expire are never used.
 */
export function recordedRows(samples: Tensor, expired: Tensor, rows: Tensor): Tensor {
  const [c, k] = expired.shape as [number, number]
  const m = rows.shape[1]!
  const b = samples.builder
  if (m === 0) return b.full([c, k, samples.shape[2]!], 0) // the reference expired nothing
  // slot[c, k] = how many codes before k expired: code k's place in the recorded list (exact small integers)
  const before = b.iota([k, k], 0).lt(b.iota([k, k], 1)).cast('float32')
  const slot = expired.cast('float32').matmul(before).cast('int32').minimum(m - 1)
  const src = rows.reshape([c * m]).gather(slot.add(b.iota([c, k], 0).mul(m)), 0) // (C, K) row numbers
  return gatherCodes(samples, src)
}

/**
 * k-means on each codebook's rows (the reference's `kmeans`): means start at random distinct
 * batch rows, then `iters` rounds of assign / average, keeping a mean whose cluster went empty.
 * Returns the means (C, K, d) and the last round's cluster sizes (C, K).
 */
export function kmeans(flat: Tensor, k: number, iters: number, cosine: boolean, u: Tensor, rowMask?: Tensor, sync?: RankSync): { means: Tensor; bins: Tensor } {
  // with a token mask (C, N) the reference clusters only the kept rows; synced (sync_kmeans), `u`
  // orders the global rows and counts and sums are all-reduced
  let means: Tensor
  if (sync) means = sampleRowsSynced(flat, k, { u, ...(rowMask ? { mask: rowMask } : {}) }, sync)
  else means = rowMask ? sampleMaskedRows(flat, k, u, rowMask) : sampleRows(flat, k, u)
  let bins = flat.builder.full([flat.shape[0]!, k], 0)
  for (let it = 0; it < iters; it++) {
    const dists = cosine ? flat.matmul(means.mT) : codebookDistances(flat, means, false)
    const buckets = dists.argmax(-1)
    const onehot = rowMask ? where(rowMask.expandDims(-1), oneHot(buckets, k), 0) : oneHot(buckets, k)
    bins = sumOverRanks(onehot.sum(1), sync)
    const zero = bins.eq(0)
    const clamped = where(zero, 1, bins)
    let newMeans = sumOverRanks(onehot.mT.matmul(flat), sync).div(clamped.expandDims(-1))
    if (cosine) newMeans = l2norm(newMeans)
    means = where(zero.expandDims(-1), means, newMeans)
  }
  return { means, bins }
}

/** The orthogonal regularization of the reference (eq. 2 of arXiv:2112.00384) over the codes selected by `mask` (K) or all codes. */
export function orthogonalLoss(embed: Tensor, mask?: Tensor): Tensor {
  const [h, k] = embed.shape as [number, number, number]
  const normed = l2norm(embed)
  const cos2 = normed.matmul(normed.mT).square() // (h, K, K)
  if (!mask) return cos2.sum().div(h * k * k).sub(f32(1 / k))
  const m = mask.cast('float32')
  const pair = m.expandDims(-1).mul(m.expandDims(0)) // (K, K)
  const n = m.sum()
  return cos2.mul(pair).sum().div(n.square().mul(h)).sub(n.recip())
}
