import type { Tensor } from '@tessera/core'
import { l2norm } from './codebook.js'
import type { VQConfig } from './config.js'

/**
 * VectorQuantize's heads: how the projected (b, n, h·cd) tokens become the codebook's (C, N, cd)
 * rows and back. Separate codebooks per head take (h, b·n) rows; a shared codebook takes the
 * heads' rows together, (1, b·h·n) in the reference's (b, h, n) order.
 */

export interface HeadRows {
  /** The codebook's input in the reference's layout (l2-normalised for a cosine codebook). */
  readonly cin: Tensor
  /** The same as (C, N, cd) rows. */
  readonly flat: Tensor
  /** The rows as (C, b', n): b' = b, or b·h for a shared multi-head codebook. */
  readonly rowLayout: [number, number, number]
}

export function splitHeads(cfg: VQConfig, z: Tensor): HeadRows {
  const { heads: h, codebook_dim: cd, num_codebooks: C } = cfg
  const [b, n] = z.shape as [number, number]
  let cin: Tensor
  if (h === 1) cin = z
  else if (cfg.separate_codebook_per_head) cin = z.reshape([b, n, h, cd]).transpose([2, 0, 1, 3])
  else cin = z.reshape([b, n, h, cd]).transpose([0, 2, 1, 3]).reshape([1, b * h, n, cd])
  if (cfg.use_cosine_sim) cin = l2norm(cin)
  const perHeadRows = h === 1 || cfg.separate_codebook_per_head
  const N = perHeadRows ? b * n : b * h * n
  return { cin, flat: cin.reshape([C, N, cd]), rowLayout: perHeadRows ? [C, b, n] : [1, b * h, n] }
}

/** Distances (C, N, K) in the reference's layout: (C, b, n, K), or (1, b·h, n, K) for a shared codebook. */
export const distancesInLayout = (dist: Tensor, rowLayout: readonly [number, number, number]): Tensor => dist.reshape([...rowLayout, dist.shape[2]!])

/** The codebook's codes (C, N, [k,] cd) merged back into tokens: (b, n, h·cd), or (b, n, k, cd) for one head with top-k. */
export function mergeHeads(cfg: VQConfig, quantize: Tensor, b: number, n: number): Tensor {
  const { heads: h, codebook_dim: cd } = cfg
  if (h === 1) return quantize.reshape([b, n, ...quantize.shape.slice(2)])
  if (cfg.separate_codebook_per_head) return quantize.reshape([h, b, n, cd]).transpose([1, 2, 0, 3]).reshape([b, n, h * cd])
  return quantize.reshape([b, h, n, cd]).transpose([0, 2, 1, 3]).reshape([b, n, h * cd])
}

/** The codebook's indices (C, N, [k]) per token: (b, n, [k]) for one head, (b, n, h) for several. */
export function headIndices(cfg: VQConfig, ind: Tensor, b: number, n: number): Tensor {
  const h = cfg.heads
  if (h === 1) return ind.reshape([b, n, ...ind.shape.slice(2)])
  if (cfg.separate_codebook_per_head) return ind.reshape([h, b, n]).transpose([1, 2, 0])
  return ind.reshape([b, h, n]).transpose([0, 2, 1])
}
