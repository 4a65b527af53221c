import type { Tensor } from '@tessera/core'
import { TesseraError, foldKey, where } from '@tessera/core'
import type { Named } from '../quantizer.js'
import { codebookDistances, embedFromAverages, expireCodes, gatherCodes, kmeans, oneHot } from './codebook.js'
import type { VQConfig } from './config.js'
import { gumbelNoise, requireKey } from './sampling.js'
import type { CodebookSync } from './sync.js'
import { localRowIndex, sumOverRanks } from './sync.js'
import type { CodebookExtras, EmaAccumulator } from './forward-options.js'
import { transformCodebook, transformedCodes } from './codebook-transform.js'
import { emaStatistics } from './ema-update.js'
import { topkIndices } from './topk.js'

/**
 * One forward of the reference's `Codebook` on (C, N, d) rows: k-means init, code selection, the
 * EMA step and dead-code revival. VectorQuantize (vector-quantize.ts) wraps it with projections,
 * heads, masks and losses; ResidualVQ's shared codebook calls `expireDead` itself.
 */
/** State-dict names of the codebook buffers, relative to the quantizer's prefix. */
export const CB = {
  embed: '_codebook.embed',
  clusterSize: '_codebook.cluster_size',
  embedAvg: '_codebook.embed_avg',
  initted: '_codebook.initted',
} as const

// distinct tags so that each random use draws from its own stream
const TAG_KMEANS = 1
const TAG_GUMBEL = 2
const TAG_EXPIRE = 3
/** The tag of the orthogonal regularisation's code subset (vq-losses.ts), distinct from the codebook's. */
export const TAG_ORTHO = 4

export interface CodebookState {
  readonly embed: Tensor
  readonly clusterSize: Tensor
  readonly embedAvg: Tensor
  readonly initted: Tensor
}

export interface CodebookStep {
  /** Selected codes (C, N, d), with the codebook as it was before this call's update. */
  readonly quantize: Tensor
  /** int32 (C, N) */
  readonly ind: Tensor
  /** Negative distances or cosine similarities (C, N, K). */
  readonly dist: Tensor
  readonly next: CodebookState
  /** What `CodebookCall.prepare` gave, when there was one. */
  readonly prepared?: PreparedCodebook
  /** After an `accumEmaUpdate` call: the accumulated statistics (the buffers in `next` are unchanged). */
  readonly accumulated?: EmaAccumulator
  /**
   * With `kmeans_init` and a token mask: bool scalar, true when the codebook was not initialised and
   * no token was kept, so k-means had no row (the reference raises). `next` is then the state as
   * given, and the caller keeps the rest of its state as given too.
   */
  readonly unchanged?: Tensor
}

/** The codebook as distances see it, and the rows the EMA statistics sum (see `CodebookCall.prepare`). */
export interface PreparedCodebook {
  readonly embed: Tensor
  readonly statsInput?: Tensor
  /** Buffers the preparation updated (affine statistics), under their state-dict names. */
  readonly state?: Named<Tensor>
}

export interface CodebookCall {
  readonly training: boolean
  readonly freeze: boolean
  readonly temperature: number
  readonly key?: Tensor
  /** Accumulate EMA statistics but leave `embed` to a later `embedFromAverages` (shared ResidualVQ codebook). */
  readonly manualEma?: boolean
  /** A recorded dead-code draw to replay (see `VQApplyOptions.replacementRows`). */
  readonly replacementRows?: Tensor
  /**
   * Maps the raw codebook (after k-means init) to the one distances and codes are taken from (the
   * reference's bridge and affine transform), and gives the rows its EMA sums use; the raw codebook
   * is what the EMA and dead-code revival rewrite.
   */
  readonly prepare?: (embed: Tensor) => PreparedCodebook
  /** Forward arguments that reach the codebook: token mask, top-k, codebook transform, EMA options. */
  readonly extras?: CodebookExtras
  /** The ranks this call syncs with (absent: one process). */
  readonly sync?: CodebookSync
  readonly where: string
}

/**
 * One forward of the reference's `Codebook` on (C, N, d) rows: k-means init when not yet
 * initted, nearest code (or Gumbel sample), then in training the EMA step and dead-code revival.
 */
export function codebookForward(cfg: VQConfig, s: CodebookState, flat: Tensor, call: CodebookCall): CodebookStep {
  const K = cfg.codebook_size
  const cosine = cfg.use_cosine_sim
  let st = s
  let unchanged: Tensor | undefined
  if (cfg.kmeans_init) {
    // the reference runs k-means on the first batch in any mode; the flag makes it a no-op afterwards
    const key = foldKey(requireKey(call.key, call.where, 'kmeans_init (the first batch picks the initial means)'), TAG_KMEANS)
    const ks = call.sync?.kmeans ? call.sync.world : undefined
    const u = flat.builder.randomUniform(key, [flat.shape[0]!, flat.shape[1]! * (ks?.size ?? 1)])
    const rowMask = call.extras?.rowMask
    const { means, bins } = kmeans(flat, K, cfg.kmeans_iters, cosine, u, rowMask, ks)
    const avg = means.mul(bins.expandDims(-1))
    const emb = embedFromAverages(bins, avg, cfg.eps, cosine)
    let keep = s.initted
    let initted = s.initted.builder.full([], 1, 'bool')
    if (rowMask) {
      // no kept token (over the ranks k-means syncs with): the reference raises, having nothing to
      // start from; a program cannot, so the codebook stays uninitialised for a later batch
      const empty = sumOverRanks(rowMask.cast('float32').max(), ks).eq(0)
      unchanged = s.initted.not().and(empty)
      keep = keep.or(empty)
      initted = s.initted.or(empty.not())
    }
    st = {
      embed: where(keep, s.embed, emb),
      clusterSize: where(keep, s.clusterSize, bins),
      embedAvg: where(keep, s.embedAvg, avg),
      initted,
    }
  }
  const prepared = call.prepare?.(st.embed)
  const embed = prepared?.embed ?? st.embed
  const ex = call.extras
  const transformed = ex?.transform ? transformCodebook(ex.transform, embed, flat, ex.layout, cosine) : undefined
  const dist = transformed ? transformed.dist : codebookDistances(flat, embed, cosine)
  const temp = call.temperature
  let logits = dist
  if (call.training && cfg.stochastic_sample_codes && temp > 0) {
    const key = foldKey(requireKey(call.key, call.where, 'stochastic_sample_codes in training'), TAG_GUMBEL)
    const w = call.sync?.world
    // synced: this rank's rows of the noise one process draws for the whole batch
    const u = w ? flat.builder.randomUniform(key, [dist.shape[0]!, dist.shape[1]! * w.size, dist.shape[2]!]).gather(localRowIndex(w, dist.shape[1]!), 1) : flat.builder.randomUniform(key, dist.shape)
    logits = dist.div(temp).add(gumbelNoise(u))
  }
  const ind = ex?.topk !== undefined ? topkIndices(logits, ex.topk) : logits.argmax(-1)
  let quantize: Tensor
  if (call.training && cfg.straight_through && temp > 0) {
    const p = dist.div(temp).softmax(-1)
    const soft = oneHot(ind, K).add(p).sub(p.stopGradient())
    quantize = transformed ? transformedCodes(transformed.codes, ind, soft) : soft.matmul(embed)
  } else quantize = transformed ? transformedCodes(transformed.codes, ind) : gatherCodes(embed, ind)

  let next = st
  const hasDead = cfg.threshold_ema_dead_code > 0
  const emaUpdate = ex?.emaUpdate ?? cfg.ema_update
  // an accumulator no EMA step consumes (eval, frozen, top-k) is handed back unchanged
  let accumulated: EmaAccumulator | undefined = ex?.emaAccum
  // the reference makes no codebook update for a top-k call
  if (call.training && !call.freeze && ex?.topk === undefined && (emaUpdate || hasDead)) {
    const stats = emaStatistics(cfg, { embed: st.embed, clusterSize: st.clusterSize, embedAvg: st.embedAvg }, prepared?.statsInput ?? flat, ind, {
      accumulate: ex?.accumulate ?? false,
      ...(ex?.rowMask ? { rowMask: ex.rowMask } : {}),
      ...(ex?.emaUpdateWeight !== undefined ? { weight: ex.emaUpdateWeight } : {}),
      ...(ex?.emaAccum ? { accum: ex.emaAccum } : {}),
      ...(call.sync?.codebook ? { sync: call.sync.world } : {}),
    })
    accumulated = stats.accumulated
    if (!accumulated) {
      let newEmbed = st.embed
      if (emaUpdate && !call.manualEma) newEmbed = embedFromAverages(stats.clusterSize, stats.embedAvg, cfg.eps, cosine)
      let buf = { embed: newEmbed, clusterSize: stats.clusterSize, embedAvg: stats.embedAvg }
      if (hasDead) buf = expireDead(cfg, buf, flat, { ...call, ...(ex?.rowMask ? { rowMask: ex.rowMask } : {}) })
      next = { ...buf, initted: st.initted }
    }
  }
  // a call that could not initialise the codebook updates none of its buffers (the reference's raised before any)
  if (unchanged) next = keepIf(unchanged, s, next)
  return { quantize, ind, dist, next, ...(prepared ? { prepared } : {}), ...(accumulated ? { accumulated } : {}), ...(unchanged ? { unchanged } : {}) }
}

/** `before`'s buffers where `cond` (a bool scalar), else `after`'s. */
const keepIf = (cond: Tensor, before: CodebookState, after: CodebookState): CodebookState => ({
  embed: where(cond, before.embed, after.embed),
  clusterSize: where(cond, before.clusterSize, after.clusterSize),
  embedAvg: where(cond, before.embedAvg, after.embedAvg),
  initted: where(cond, before.initted, after.initted),
})

/** Dead-code revival on (C, N, d) rows with this call's key. */
export function expireDead(
  cfg: VQConfig,
  buf: { embed: Tensor; clusterSize: Tensor; embedAvg: Tensor },
  flat: Tensor,
  call: Pick<CodebookCall, 'key' | 'where' | 'replacementRows' | 'sync'> & { readonly rowMask?: Tensor; readonly index?: Tensor },
  tag = 0,
) {
  const rows = call.replacementRows
  // synced (sync_kmeans): the draw orders the global rows; `index` places this rank's rows among them
  const ks = call.sync?.kmeans ? call.sync.world : undefined
  if (rows) {
    if (ks) throw new TesseraError('input', call.where, 'replacementRows (a recorded single-process draw) cannot be replayed in a synced call')
    if (call.rowMask) throw new TesseraError('input', call.where, 'replacementRows cannot be replayed with a token mask (recorded rows number the kept tokens only)')
    if (rows.dtype !== 'int32' || rows.rank !== 2 || rows.shape[0] !== flat.shape[0])
      throw new TesseraError('input', call.where, `replacementRows must be int32 (${flat.shape[0]}, M), got ${rows.dtype}[${rows.shape.join(',')}]`)
    return expireCodes(buf, flat, cfg.threshold_ema_dead_code, cfg.reset_cluster_size, cfg.use_cosine_sim, { rows })
  }
  const key = foldKey(requireKey(call.key, call.where, 'threshold_ema_dead_code > 0 in training (replacement rows)'), TAG_EXPIRE + 16 * tag)
  const u = flat.builder.randomUniform(key, [flat.shape[0]!, flat.shape[1]! * (ks?.size ?? 1)])
  const synced = ks ? { sync: ks, ...(call.index ? { index: call.index } : {}) } : {}
  return expireCodes(buf, flat, cfg.threshold_ema_dead_code, cfg.reset_cluster_size, cfg.use_cosine_sim, { u, ...(call.rowMask ? { rowMask: call.rowMask } : {}), ...synced })
}
