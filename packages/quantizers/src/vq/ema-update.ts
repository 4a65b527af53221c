import type { Tensor } from '@tessera/core'
import { TesseraError, where } from '@tessera/core'
import type { CodebookBuffers } from './codebook.js'
import { lerp, oneHot, trackStatistics } from './codebook.js'
import type { VQConfig } from './config.js'
import type { EmaAccumulator, EmaUpdateWeight } from './forward-options.js'
import { checkWeightTensor } from './forward-options.js'
import type { RankSync } from './sync.js'
import { sumOverRanks } from './sync.js'

/** What one call's EMA statistics step produced. */
export interface EmaStatistics {
  readonly clusterSize: Tensor
  readonly embedAvg: Tensor
  /** Set on an accumulating call: the buffers above are then unchanged. */
  readonly accumulated?: EmaAccumulator
}

export interface EmaOptions {
  /** bool (C, N): rows that count. */
  readonly rowMask?: Tensor
  readonly weight?: EmaUpdateWeight
  readonly accumulate: boolean
  readonly accum?: EmaAccumulator
  /** Sum this batch's statistics over the ranks (sync_codebook). */
  readonly sync?: RankSync
}

const f32 = Math.fround

/**
 * The reference's `track_cluster_size_and_embed_avg` with its options: the one-hot rows of
 * masked-out tokens are zeroed; the statistics are either summed into an accumulator
 * (`accum_ema_update`) or, with any accumulated statistics added, lerped into `cluster_size` and
 * `embed_avg` with weight (1 − decay)·`ema_update_weight`.
 */
export function emaStatistics(cfg: VQConfig, buf: CodebookBuffers, flat: Tensor, ind: Tensor, o: EmaOptions): EmaStatistics {
  if (!o.rowMask && o.weight === undefined && !o.accumulate && !o.accum) return trackStatistics(buf, flat, ind, cfg.decay, o.sync)
  let onehot = oneHot(ind, cfg.codebook_size) // (C, N, K)
  if (o.rowMask) onehot = where(o.rowMask.expandDims(-1), onehot, 0)
  // this batch's statistics, summed over the ranks when synced (before any accumulation, as the reference)
  const counts = sumOverRanks(onehot.sum(1), o.sync) // (C, K)
  const sums = sumOverRanks(onehot.mT.matmul(flat), o.sync) // (C, K, d)
  const w = typeof o.weight === 'function' ? o.weight(sums, counts) : o.weight
  if (o.accumulate) {
    const accumulated = o.accum ? { clusterSize: o.accum.clusterSize.add(counts), embedSum: o.accum.embedSum.add(sums) } : { clusterSize: counts, embedSum: sums }
    return { clusterSize: buf.clusterSize, embedAvg: buf.embedAvg, accumulated }
  }
  const newCounts = o.accum ? counts.add(o.accum.clusterSize) : counts
  const newSums = o.accum ? sums.add(o.accum.embedSum) : sums
  if (w === undefined) return { clusterSize: lerp(buf.clusterSize, newCounts, 1 - cfg.decay), embedAvg: lerp(buf.embedAvg, newSums, 1 - cfg.decay) }
  if (typeof w === 'number') {
    if (!Number.isFinite(w)) throw new TesseraError('input', 'VectorQuantize.emaUpdateWeight', `the weight function returned ${w}`)
    const ew = f32((1 - cfg.decay) * w)
    return { clusterSize: lerpWeighted(buf.clusterSize, newCounts, ew), embedAvg: lerpWeighted(buf.embedAvg, newSums, ew) }
  }
  if (typeof w !== 'object' || w === null || !('builder' in w))
    throw new TesseraError('input', 'VectorQuantize.emaUpdateWeight', 'the weight function must return a number or a float32 tensor')
  const ew = checkWeightTensor(cfg, w).mul(f32(1 - cfg.decay)) // (C, K)
  return { clusterSize: lerpWeighted(buf.clusterSize, newCounts, ew), embedAvg: lerpWeighted(buf.embedAvg, newSums, ew.expandDims(-1)) }
}

/**
 * torch's `lerp_` with any weight (a number or a tensor broadcast over `a`): `a + w·(b − a)` where
 * |w| < 0.5, else `b − (b − a)·(1 − w)`, in float32.
 */
export function lerpWeighted(a: Tensor, b: Tensor, w: number | Tensor): Tensor {
  if (typeof w === 'number') {
    const x = f32(w)
    return Math.abs(x) < 0.5 ? a.add(b.sub(a).mul(x)) : b.sub(b.sub(a).mul(f32(1 - x)))
  }
  const diff = b.sub(a)
  return where(w.abs().lt(0.5), a.add(diff.mul(w)), b.sub(diff.mul(w.rsub(1))))
}
