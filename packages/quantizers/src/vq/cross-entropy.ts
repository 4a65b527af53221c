import type { Tensor } from '@tessera/core'
import { where } from '@tessera/core'
import { oneHot } from './codebook.js'

/**
 * torch's `F.cross_entropy(logits, targets, ignore_index=-1)` with the mean reduction, the codes
 * axis last: logits (..., K), targets int32 (...). The mean is over targets other than -1 (all
 * ignored: 0/0, NaN, as torch). A target outside [-1, K) makes the loss NaN (torch raises; a traced
 * program cannot, so the value says it).
 */
export function crossEntropy(logits: Tensor, targets: Tensor): Tensor {
  const K = logits.shape[logits.rank - 1]!
  const logp = logits.logSoftmax(-1)
  const counted = targets.ne(-1)
  const nll = oneHot(targets, K).mul(logp).sum(-1).neg() // 0 where the target is -1
  const w = counted.cast('float32')
  const loss = nll.mul(w).sum().div(w.sum())
  const bad = counted.and(targets.lt(0).or(targets.ge(K))).cast('float32').max().gt(0)
  return where(bad, NaN, loss)
}

/**
 * Target codes in the codebook's (C, N) row layout from the reference's (b, n) or (b, n, heads)
 * targets: the inverse of how VectorQuantize lays out its indices.
 */
export function targetRows(targets: Tensor, heads: number, separate: boolean): Tensor {
  const [b, n] = targets.shape as [number, number]
  if (heads === 1) return targets.reshape([1, b * n])
  if (separate) return targets.moveAxis(-1, 0).reshape([heads, b * n])
  return targets.transpose([0, 2, 1]).reshape([1, b * heads * n])
}
