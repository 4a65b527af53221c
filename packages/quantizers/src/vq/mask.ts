import type { Tensor } from '@tessera/core'
import { where } from '@tessera/core'

/**
 * VectorQuantize's token mask (the reference's `mask` / `lens`): which tokens take part in the
 * codebook statistics and losses, and where outputs are blanked. Masks are bool (b, n).
 */

/** `lens_to_mask`: position < length, bool (b, n). */
export const lensToMask = (lens: Tensor, n: number): Tensor => lens.builder.iota([lens.shape[0]!, n], 1).lt(lens.expandDims(-1))

/**
 * The (b, n) mask over the codebook's (C, N) rows, in the order the rows are flattened: (b, n) for
 * one head, the same rows for each separate head's codebook, (b, heads, n) for a shared codebook.
 */
export function codebookRowMask(mask: Tensor, numCodebooks: number, heads: number, separate: boolean): Tensor {
  const [b, n] = mask.shape as [number, number]
  if (heads === 1) return mask.reshape([1, b * n])
  if (separate) return mask.reshape([1, b * n]).broadcastTo([numCodebooks, b * n])
  return mask.expandDims(1).broadcastTo([b, heads, n]).reshape([1, b * heads * n])
}

/**
 * The reference's masked commitment loss: the mean of (code − input)² over the masked-in tokens
 * (all features), where `x` is the raw input, not the projected one. No token in: 0/0, NaN, as torch.
 */
export function maskedCommitment(codes: Tensor, x: Tensor, mask: Tensor): Tensor {
  const d = x.shape[x.rank - 1]!
  const sq = codes.sub(x).square()
  const kept = where(mask.expandDims(-1), sq, 0).sum()
  return kept.div(mask.cast('float32').sum().mul(d))
}

/**
 * The top-k commitment loss (b, n, k): per token and rank, the mean over features of
 * (code − raw input)², zero at masked-out tokens. The reference does not reduce it further.
 */
export function topkCommitment(codes: Tensor, x: Tensor, mask?: Tensor): Tensor {
  const loss = codes.sub(x.expandDims(-2)).square().mean(-1)
  return mask ? where(mask.expandDims(-1), loss, 0) : loss
}

/**
 * The outputs at masked-out tokens: zeros (or the input, without `return_zeros_for_masked_padding`)
 * for `quantized` (b, n, [k,] dim), -1 for `indices` (b, n, ...).
 */
export function maskOutputs(mask: Tensor, quantized: Tensor, indices: Tensor, x: Tensor, zeros: boolean): { quantized: Tensor; indices: Tensor } {
  const extra = quantized.rank - 3 // the top-k axis
  let mq = mask
  for (let i = 0; i <= extra; i++) mq = mq.expandDims(-1)
  const fill = zeros ? 0 : extra ? x.expandDims(-2) : x
  let mi = mask
  while (mi.rank < indices.rank) mi = mi.expandDims(-1)
  return { quantized: where(mq, quantized, fill), indices: where(mi, indices, -1) }
}
