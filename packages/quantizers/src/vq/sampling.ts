import type { Tensor } from '@tessera/core'
import { TesseraError, where } from '@tessera/core'

/**
 * Random helpers over symbolic i32[2] keys. A draw's element i depends only on (key, i), so two
 * uses of one key would be correlated: every use gets its own key folded in from a distinct tag.
 */

/** A key derived from `key` and a small integer tag (int32 add wraps, so any tag is safe). */
export function foldKey(key: Tensor, tag: number): Tensor {
  if (key.dtype !== 'int32' || key.rank !== 1 || key.shape[0] !== 2)
    throw new TesseraError('input', 'key', `a random key must be i32[2], got ${key.dtype}[${key.shape.join(',')}]`)
  return key.add(key.builder.constant([Math.imul(tag, 0x2545f491) | 0, tag | 0], [2], 'int32'))
}

export function requireKey(key: Tensor | undefined, where_: string, why: string): Tensor {
  if (!key) throw new TesseraError('input', where_, `${why} needs a random key (opts.key, i32[2])`)
  return key
}

/**
 * Ranks of `u` along its last axis: a uniformly random permutation when `u` is i.i.d. uniform.
 * rank_i = #{j : u_j < u_i} + #{j < i : u_j == u_i}, so ties still give distinct ranks.
 * Returns float32 ranks (exact integers below 2^24). O(n^2) comparisons: meant for batch rows.
 */
export function ranksOf(u: Tensor): Tensor {
  const n = u.shape[u.rank - 1]!
  const ui = u.expandDims(-1) // (..., n, 1): row i
  const uj = u.expandDims(-2) // (..., 1, n): column j
  const b = u.builder
  const jBeforeI = b.iota([n, n], 1).lt(b.iota([n, n], 0)) // j < i
  const less = uj.lt(ui)
  const tieBefore = uj.eq(ui).and(jBeforeI.broadcastTo([...u.shape.slice(0, -1), n, n]))
  return less.or(tieBefore).cast('float32').sum(-1)
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

/** Gumbel noise -log(-log(u)) with the reference's log clamp (1e-20). */
export function gumbelNoise(u: Tensor): Tensor {
  return u.maximum(1e-20).log().neg().maximum(1e-20).log().neg()
}

/** Select `a` where `cond` (a bool scalar or broadcastable) else `b`. */
export const select = (cond: Tensor, a: Tensor, b: Tensor): Tensor => where(cond, a, b)
