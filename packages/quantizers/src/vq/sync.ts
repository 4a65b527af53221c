import type { Builder, Tensor } from '@tessera/core'
import { TesseraError, describeValue, where } from '@tessera/core'
import type { VQConfig } from './config.js'

/**
 * Synchronised statistics across ranks (docs/DISTRIBUTED.md). Every rank traces the same
 * program for its shard of the global batch (shards of equal size, concatenated in rank order);
 * the program's collectives (`all_reduce`, `axis_index`) are resolved by `runCollective`. Random
 * choices over batch rows are made over the global batch with the shared key, as one process on
 * the whole batch makes them, and each rank contributes the rows it holds (a one-hot product,
 * summed over ranks), so N ranks end a step with the state one process computes.
 */
export interface RankSync {
  /** The number of ranks (known while tracing: the global batch has size x the local rows). */
  readonly size: number
  /** This rank (i32 scalar, `axis_index`). */
  readonly rank: Tensor
}

/** The ranks a call is traced for (`ApplyOptions.world`); a bad value is an error naming it. */
export function rankSync(world: unknown, b: Builder, where_: string): RankSync | undefined {
  if (world === undefined) return undefined
  const size = (world as { size?: unknown } | null)?.size
  if (typeof world !== 'object' || world === null || !Number.isInteger(size) || (size as number) < 1)
    throw new TesseraError('input', `${where_}.world`, `world must be { size } with a positive integer size (the number of ranks), got ${describeValue(world)}`)
  // axis_index is recorded on first use, so a call that never needs the rank has none
  let rank: Tensor | undefined
  return {
    size: size as number,
    get rank() {
      return (rank ??= b.axisIndex(size as number))
    },
  }
}

/** The sum over ranks (an all-reduce), or `t` itself when the call is not synced. */
export const sumOverRanks = (t: Tensor, sync: RankSync | undefined): Tensor => (sync ? t.allReduce('sum') : t)

/** The global positions of this rank's `n` rows: rank·n + j (int32 (n)). */
export function localRowIndex(sync: RankSync, n: number): Tensor {
  return sync.rank.mul(n).add(sync.rank.builder.iota([n], 0))
}

/**
 * Every rank's values of a per-row tensor `t` (C, n), at their global positions `index` (n) among
 * `total` rows: each rank places its rows (a one-hot product) and the ranks' placements are
 * summed; every position gets one value and zeros, so the result is exact.
 */
export function gatherRows(t: Tensor, index: Tensor, total: number, sync: RankSync): Tensor {
  const b = t.builder
  const n = index.shape[0]!
  const place = index.expandDims(-1).eq(b.iota([n, total], 1)).cast('float32') // (n, total)
  return t.cast('float32').matmul(place).allReduce('sum') // (C, total)
}

/**
 * The ranks in `u` (..., total), uniform draws over the global rows, of this rank's rows at global
 * positions `index` (n): (..., n), what one process's `ranksOf(u)` gives those rows (ties broken
 * by position). Each rank ranks only its own rows against every draw.
 */
export function globalRanks(u: Tensor, index: Tensor): Tensor {
  const total = u.shape[u.rank - 1]!
  const ui = u.gather(index, u.rank - 1).expandDims(-1) // (..., n, 1): this rank's rows
  const uj = u.expandDims(-2) // (..., 1, total)
  const before = u.builder.iota([total], 0).expandDims(0).lt(index.expandDims(-1)) // (n, total): j before row i
  return uj.lt(ui).or(uj.eq(ui).and(before.broadcastTo([...ui.shape.slice(0, -1), total]))).cast('float32').sum(-1)
}

export interface SyncedDraw {
  /** Uniform draws over the global rows (C, total), from the key every rank shares. */
  readonly u: Tensor
  /** Global positions of this rank's rows (n); default rank·n + j. */
  readonly index?: Tensor
  /** This rank's rows that may be drawn (C, n) bool; default all. */
  readonly mask?: Tensor
}

/**
 * `sampleRows` (or `sampleMaskedRows` with a mask) over the rows of every rank: slot s of k gets
 * the global row whose rank in `u` is s mod (the number of drawable rows), exactly the row one
 * process drawing from the same `u` on the whole batch gets. Each rank ranks only its own rows
 * against the global draws and contributes the ones it holds.
 */
export function sampleRowsSynced(rows: Tensor, k: number, draw: SyncedDraw, sync: RankSync): Tensor {
  const b = rows.builder
  const n = rows.shape[rows.rank - 2]!
  const total = draw.u.shape[draw.u.rank - 1]!
  const index = draw.index ?? localRowIndex(sync, n)
  const globalMask = draw.mask ? gatherRows(draw.mask, index, total, sync).gt(0) : undefined
  // as in sampleMaskedRows: drawable rows rank first (u < 1)
  const u = globalMask ? where(globalMask, draw.u, draw.u.add(2)) : draw.u
  const ranks = globalRanks(u, index) // (C, n)
  let slot: Tensor
  if (globalMask) {
    // with no drawable row no slot matches (zeros, as sampleMaskedRows gives)
    const kept = globalMask.cast('int32').sum(-1, true) // (C, 1)
    slot = where(kept.eq(0), -1, b.iota([k], 0).mod(kept.maximum(1))).cast('float32') // (C, k)
  } else slot = b.iota([k], 0).mod(total).cast('float32') // (k)
  const pick = ranks.expandDims(-2).eq(slot.expandDims(-1)).cast('float32') // (C, k, n)
  return pick.matmul(rows).allReduce('sum')
}

/** What a codebook call synchronises across the ranks of its world (docs/DISTRIBUTED.md); absent, one process. */
export interface CodebookSync {
  /** The call's ranks; per-row random draws (Gumbel noise) are taken over the global batch. */
  readonly world: RankSync
  /** `sync_codebook`: the EMA counts and sums are summed over the ranks. */
  readonly codebook: boolean
  /** `sync_codebook` and `sync_kmeans`: k-means statistics, and the rows k-means and dead codes draw, are global. */
  readonly kmeans: boolean
  /** `sync_affine_param`: the affine batch statistics are summed over the ranks. */
  readonly affine: boolean
}

/** The sync of a call traced with `world` under `cfg`'s sync options. */
export function codebookSync(cfg: VQConfig, world: RankSync | undefined): CodebookSync | undefined {
  if (!world) return undefined
  const codebook = cfg.sync_codebook !== false
  return { world, codebook, kmeans: codebook && cfg.sync_kmeans, affine: cfg.sync_affine_param }
}
