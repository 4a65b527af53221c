import type { Tensor } from '@tessera/core'
import { TesseraError, fmtShape } from '@tessera/core'
import { l2norm, oneHot } from './codebook.js'

/**
 * The reference's `codebook_transform_fn` (an implicit neural codebook): a function of the codebook
 * giving each token its own codebook. Distances and codes are taken from the transformed codes;
 * the EMA statistics and dead-code revival still work on the codebook itself.
 */
export interface TransformedCodebook {
  /** Per-row codebooks (C, N, K, d); l2-normalized for a cosine codebook, as the reference does. */
  readonly codes: Tensor
  /** Negative distances or cosine similarities (C, N, K). */
  readonly dist: Tensor
}

/**
 * Calls `fn` on `embed` (C, K, d) and checks it returned (C, b', n, K, d), `layout` being the
 * (C, b', n) of the rows `flat` (C, N, d) came from. Euclidean distances are torch's
 * `pairwise_distance`: ||x − e + 1e-6||.
 */
export function transformCodebook(fn: (embed: Tensor) => Tensor, embed: Tensor, flat: Tensor, layout: readonly [number, number, number], cosine: boolean): TransformedCodebook {
  const [C, K, d] = embed.shape as [number, number, number]
  const [c, b, n] = layout
  const t = fn(embed)
  const want = [c, b, n, K, d]
  if (typeof t !== 'object' || t === null || !('shape' in t) || t.dtype !== 'float32' || t.rank !== 5 || want.some((s, i) => t.shape[i] !== s))
    throw new TesseraError(
      'shape',
      'VectorQuantize.codebookTransformFn',
      `must return float32 ${fmtShape(want)} (one codebook per token: (codebooks, batch, tokens, codebook_size, codebook_dim)), got ${t && typeof t === 'object' && 'shape' in t ? `${t.dtype}${fmtShape(t.shape)}` : String(t)}`,
    )
  let codes = t.reshape([C, b * n, K, d])
  const x = flat.expandDims(-2) // (C, N, 1, d)
  if (cosine) {
    codes = l2norm(codes)
    return { codes, dist: x.mul(codes).sum(-1) }
  }
  return { codes, dist: x.sub(codes).add(1e-6).square().sum(-1).sqrt().neg() }
}

/**
 * Codes of the per-row codebooks (C, N, K, d) for indices (C, N) or (C, N, k), or for soft
 * one-hots `weights` (C, N, [k,] K) (the straight-through estimator's).
 */
export function transformedCodes(codes: Tensor, ind: Tensor, weights?: Tensor): Tensor {
  const K = codes.shape[2]!
  const w = weights ?? oneHot(ind, K)
  if (w.rank === 3) return w.expandDims(-2).matmul(codes).squeeze(-2)
  return w.matmul(codes) // (C, N, k, K) @ (C, N, K, d)
}
