import type { Builder, Tensor } from '@tessera/core'
import { TesseraError, entropy, fmtShape, ranksOf, where } from '@tessera/core'
import type { ApplyOptions } from '../quantizer.js'
import type { RankSync } from '../vq/sync.js'
import { gatherRows, globalRanks, localRowIndex } from '../vq/sync.js'

/**
 * LFQ's forward argument `mask` (the reference's `LFQ.forward(x, ..., mask=...)`): which tokens
 * take part in the entropy terms and the commitment loss. Quantized values and indices are
 * computed at every position, masked or not, as in the reference.
 */
export interface LFQForwardOptions {
  /**
   * bool (b): samples that take part (all their tokens), as the reference's tests pass it; or bool
   * (b, n) over the packed tokens ((b, h·w·…) for channel-first feature maps): tokens that take part.
   */
  readonly mask?: Tensor
}

export type LFQApplyOptions = ApplyOptions & LFQForwardOptions

const isTensor = (v: unknown): v is Tensor => typeof v === 'object' && v !== null && 'builder' in v && 'shape' in v && 'dtype' in v

/**
 * The checked mask as a (b, n) token mask, or undefined without one. Read on every call (eval too,
 * where the reference accepts it and it changes nothing), so a bad mask is refused in any mode.
 */
export function tokenMask(mask: unknown, tokens: readonly [number, number], x: Tensor, where_: string): Tensor | undefined {
  if (mask === undefined) return undefined
  const [b, n] = tokens
  const name = `${where_}.mask`
  if (!isTensor(mask)) throw new TesseraError('input', name, `must be a bool tensor (${b}) or (${b}, ${n}), got ${typeof mask}`)
  const show = `${mask.dtype}${fmtShape(mask.shape)}`
  if (mask.dtype !== 'bool') throw new TesseraError('dtype', name, `must be bool, got ${show}`)
  if (mask.rank === 1 && mask.shape[0] === b) return mask.expandDims(-1).broadcastTo([b, n])
  if (mask.rank === 2 && mask.shape[0] === b && mask.shape[1] === n) return mask
  throw new TesseraError('shape', name, `must be (${b}) (samples) or (${b}, ${n}) (tokens, spatial axes flattened) for x ${fmtShape(x.shape)}, got ${show}`)
}

/** int(k · frac) for every kept count k in 0..total, computed in float64 as the reference's Python does, looked up at `count` (int32 scalar). */
function sampledOf(count: Tensor, total: number, frac: number, b: Builder): Tensor {
  const table = Array.from({ length: total + 1 }, (_, k) => Math.floor(k * frac))
  return b.constant(table, [total + 1], 'int32').gather(count.reshape([1]), 0).reshape([]).cast('float32')
}

export interface MaskedEntropy {
  readonly perSample: Tensor
  readonly batchEntropy: Tensor
}

/**
 * The entropy terms over the kept tokens of `prob` (tokens, c, K), `keep` bool (tokens). With
 * `frac` < 1 a uniform subset of int(kept · frac) kept tokens is drawn with `key` (kept tokens rank
 * first in the draw, so an all-true mask draws the unmasked call's subset). With a world the kept
 * tokens (and the subset) are those of the global batch: batch probabilities are summed over ranks
 * and divided by the global count; the per-sample entropy is the rank's sum over its share of it,
 * so its mean over ranks is the one-process value.
 */
export function maskedEntropy(prob: Tensor, keep: Tensor, frac: number, key: Tensor | undefined, sync: RankSync | undefined): MaskedEntropy {
  const b = prob.builder
  const nTok = prob.shape[0]!
  const c = prob.shape[1]!
  const keptLocal = () => keep.cast('int32').sum()
  let selected = keep
  let count: Tensor // float32 scalar: the tokens the terms average over (globally with a world)
  if (frac < 1) {
    if (!key) throw new TesseraError('input', 'LFQ.frac_per_sample_entropy', 'training with frac_per_sample_entropy < 1 needs a random key (opts.key)')
    if (sync) {
      const total = nTok * sync.size
      const index = localRowIndex(sync, nTok)
      const globalKeep = gatherRows(keep.reshape([1, nTok]), index, total, sync).gt(0).reshape([total])
      const u = b.randomUniform(key, [total])
      const ranks = globalRanks(where(globalKeep, u, u.add(2)), index)
      count = sampledOf(globalKeep.cast('int32').sum(), total, frac, b)
      selected = ranks.lt(count)
    } else {
      const u = b.randomUniform(key, [nTok])
      const ranks = ranksOf(where(keep, u, u.add(2)))
      count = sampledOf(keptLocal(), nTok, frac, b)
      selected = ranks.lt(count)
    }
  } else count = (sync ? keptLocal().allReduce('sum') : keptLocal()).cast('float32')
  const sel = selected.expandDims(-1) // (tokens, 1)
  // with a world: the rank's share of the global count, so the mean over ranks is the one-process mean
  const share = sync ? count.div(sync.size) : count
  const perSample = where(sel, entropy(prob), 0).sum().div(share.mul(c))
  const probSum = where(sel.expandDims(-1), prob, 0).sum(0) // (c, K)
  const batchEntropy = entropy((sync ? probSum.allReduce('sum') : probSum).div(count)).mean()
  return { perSample, batchEntropy }
}

/**
 * The commitment loss over kept tokens: the mean of (z − code)² over the kept tokens' codebooks
 * and dimensions (the reference's `commit_loss[mask].mean()`); with a world, the rank's sum over its
 * share of the global kept tokens.
 */
export function maskedCommitment(sq: Tensor, keep: Tensor, sync: RankSync | undefined): Tensor {
  const [bsz, n, c, d] = sq.shape as [number, number, number, number]
  const m = keep.reshape([bsz, n, 1, 1])
  let count = keep.cast('int32').sum()
  if (sync) count = count.allReduce('sum')
  const share = sync ? count.cast('float32').div(sync.size) : count.cast('float32')
  return where(m, sq, 0).sum().div(share.mul(c * d))
}
