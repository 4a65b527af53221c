import type { Tensor } from '../builder.js'

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
