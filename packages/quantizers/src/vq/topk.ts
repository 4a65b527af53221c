import type { Tensor } from '@tessera/core'
import { stack, where } from '@tessera/core'

/**
 * torch.topk(logits, k).indices along the last axis: the k largest, largest first, int32 (..., k).
 * Found by k argmax passes, each excluding the codes already taken, so the first index is exactly
 * the argmax (ties go to the lower index, as argmax does).
 */
export function topkIndices(logits: Tensor, k: number): Tensor {
  const K = logits.shape[logits.rank - 1]!
  const codes = logits.builder.iota([K], 0)
  const picks: Tensor[] = []
  let rest = logits
  for (let j = 0; j < k; j++) {
    const i = rest.argmax(-1)
    picks.push(i)
    if (j + 1 < k) rest = where(codes.eq(i.expandDims(-1)), -Infinity, rest)
  }
  return stack(picks, -1)
}
