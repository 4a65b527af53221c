import type { Tensor } from '@tessera/core'
import { TesseraError, ranksOf, where } from '@tessera/core'

/**
 * Random helpers over symbolic i32[2] keys; every use of a key folds in its own tag first (core's
 * `foldKey`), since two draws from one key would be correlated.
 */

export function requireKey(key: Tensor | undefined, where_: string, why: string): Tensor {
  if (!key) throw new TesseraError('input', where_, `${why} needs a random key (opts.key, i32[2])`)
  return key
}

/**
 * For each of `k` slots, a row of `rows` (..., n, d) picked at random: slot s gets the row whose
 * rank is s mod n, so slots get distinct rows while k <= n (sampling without replacement, like the
 * reference's randperm) and cycle through a random order when k > n. Returns (..., k, d), exact rows.
 */
export function sampleRows(rows: Tensor, k: number, u: Tensor): Tensor {
  const n = rows.shape[rows.rank - 2]!
  const b = rows.builder
  const ranks = ranksOf(u) // (..., n)
  const slot = b.iota([k], 0).mod(n).cast('float32') // (k)
  const pick = ranks.expandDims(-2).eq(slot.expandDims(-1)).cast('float32') // (..., k, n)
  return pick.matmul(rows)
}

/**
 * `sampleRows` over the rows `mask` (..., n) keeps (the reference samples from `data[mask]`): the
 * kept rows take the first ranks, and slot s gets the kept row of rank s mod m, m the kept count.
 * With no row kept (the reference has nothing to sample then) slots get the first row in the order.
 */
export function sampleMaskedRows(rows: Tensor, k: number, u: Tensor, mask: Tensor): Tensor {
  const b = rows.builder
  const ranks = ranksOf(where(mask, u, u.add(2))) // u < 1, so every kept row ranks first
  const kept = mask.cast('float32').sum(-1, true).cast('int32').maximum(1) // (..., 1), exact small integers
  const slot = b.iota([k], 0).mod(kept).cast('float32') // (..., k)
  const pick = ranks.expandDims(-2).eq(slot.expandDims(-1)).cast('float32') // (..., k, n)
  return pick.matmul(rows)
}

/** Gumbel noise -log(-log(u)) with the reference's log clamp (1e-20). */
export function gumbelNoise(u: Tensor): Tensor {
  return u.maximum(1e-20).log().neg().maximum(1e-20).log().neg()
}

/** Select `a` where `cond` (a bool scalar or broadcastable) else `b`. */
export const select = (cond: Tensor, a: Tensor, b: Tensor): Tensor => where(cond, a, b)
