import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, tensorOf, where, zerosHost } from '@tessera/core'
import type { Named } from '../quantizer.js'
import type { RankSync } from './sync.js'
import { sumOverRanks } from './sync.js'

/**
 * The reference's `affine_param` codebook (euclidean only): running means and biased variances of
 * the batch (per codebook, over its rows) and of the codebook (over its codes), each an EMA. The
 * codebook is mapped onto the batch's statistics before distances are taken, and the batch onto
 * the codebook's before the EMA statistics are accumulated.
 */

/** State-dict names, relative to the quantizer's prefix. */
export const AFFINE = {
  batchMean: '_codebook.batch_mean',
  batchVariance: '_codebook.batch_variance',
  codebookMean: '_codebook.codebook_mean',
  codebookVariance: '_codebook.codebook_variance',
  codebookMeanNeedsInit: '_codebook.codebook_mean_needs_init',
  codebookVarianceNeedsInit: '_codebook.codebook_variance_needs_init',
  /**
   * Tessera's own flags: the reference registers `batch_mean` and `batch_variance` as None until
   * the first forward sets them (so a module saved before that lacks them); a fixed-shape state
   * says so with a flag named as the reference's `update_with_decay` names the codebook's.
   */
  batchMeanNeedsInit: '_codebook.batch_mean_needs_init',
  batchVarianceNeedsInit: '_codebook.batch_variance_needs_init',
} as const

/** The buffers the reference creates lazily (None until the first forward) and their Tessera flags. */
export const LAZY_AFFINE_BUFFERS: readonly (readonly [string, string])[] = [
  [AFFINE.batchMean, AFFINE.batchMeanNeedsInit],
  [AFFINE.batchVariance, AFFINE.batchVarianceNeedsInit],
]

export interface AffineState {
  readonly batchMean: Tensor // (C, 1, d)
  readonly batchVariance: Tensor
  readonly codebookMean: Tensor
  readonly codebookVariance: Tensor
  readonly batchMeanNeedsInit: Tensor // bool []
  readonly batchVarianceNeedsInit: Tensor
  readonly codebookMeanNeedsInit: Tensor
  readonly codebookVarianceNeedsInit: Tensor
}

export interface AffineConfig {
  readonly affine_param_batch_decay: number
  readonly affine_param_codebook_decay: number
  readonly sync_affine_param: boolean
}

const KEYS = Object.keys(AFFINE) as (keyof typeof AFFINE)[]

export function affineSpecs(c: number, d: number): Record<string, Aval> {
  const out: Record<string, Aval> = {}
  for (const k of KEYS) out[AFFINE[k]] = k.endsWith('NeedsInit') ? { shape: [], dtype: 'bool' } : { shape: [c, 1, d], dtype: 'float32' }
  return out
}

/**
 * A fresh module's buffers: every statistic still to be set by its first update. The reference's
 * codebook buffers are `torch.empty` (uninitialized memory) until then; Tessera starts them at 0.
 */
export function affineInit(c: number, d: number): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {}
  for (const k of KEYS) out[AFFINE[k]] = k.endsWith('NeedsInit') ? tensorOf([1], [], 'bool') : zerosHost([c, 1, d], 'float32')
  return out
}

export function readAffine(state: Named<Tensor>, where_: string): AffineState {
  const get = (name: string) => {
    const v = state[name]
    if (!v) throw new TesseraError('input', where_, `missing state entry ${name} (affine_param)`)
    return v
  }
  return Object.fromEntries(KEYS.map((k) => [k, get(AFFINE[k])])) as unknown as AffineState
}

export const writeAffine = (s: AffineState): Record<string, Tensor> => Object.fromEntries(KEYS.map((k) => [AFFINE[k], s[k]]))


/** `update_with_decay`: the new value outright while the flag says so, else old·decay + new·(1 − decay) (float32 factors, as torch multiplies). */
function withDecay(old: Tensor, needsInit: Tensor, value: Tensor, decay: number): { value: Tensor; needsInit: Tensor } {
  const v = value.stopGradient()
  const mixed = old.mul(Math.fround(decay)).add(v.mul(Math.fround(1 - decay)))
  return { value: where(needsInit, v, mixed), needsInit: needsInit.builder.full([], 0, 'bool') }
}

/** Mean and biased variance over axis 1 of (C, N, d), kept as (C, 1, d). */
const moments = (x: Tensor) => {
  const mean = x.mean(1, true)
  return { mean, variance: x.sub(mean).square().mean(1, true) }
}

/**
 * `update_affine` on (C, N, d) rows and the raw codebook (C, K, d): the codebook's statistics move
 * only in training, the batch's in every mode (as in the reference, an eval call updates them too).
 * With `sync_affine_param` the batch statistics are sums and counts reduced across the ranks of
 * `sync` (the call's world; without one, a single process).
 */
export function updateAffine(cfg: AffineConfig, s: AffineState, flat: Tensor, embed: Tensor, training: boolean, sync?: RankSync, rowMask?: Tensor): AffineState {
  let next = s
  if (training) {
    const e = moments(embed.stopGradient())
    const cm = withDecay(s.codebookMean, s.codebookMeanNeedsInit, e.mean, cfg.affine_param_codebook_decay)
    const cv = withDecay(s.codebookVariance, s.codebookVarianceNeedsInit, e.variance, cfg.affine_param_codebook_decay)
    next = { ...next, codebookMean: cm.value, codebookMeanNeedsInit: cm.needsInit, codebookVariance: cv.value, codebookVarianceNeedsInit: cv.needsInit }
  }
  const data = flat.stopGradient()
  let mean: Tensor, variance: Tensor
  // with a token mask the statistics are over the kept rows only (the reference's data[mask])
  const kept = rowMask?.cast('float32').expandDims(-1) // (C, N, 1)
  const sumRows = (t: Tensor) => (kept ? t.mul(kept) : t).sum(1, true)
  if (!cfg.sync_affine_param && !kept) ({ mean, variance } = moments(data))
  else {
    // every call site is the reference's distributed.all_reduce; one process (no world) sums one rank
    const red = (t: Tensor) => (cfg.sync_affine_param ? sumOverRanks(t, sync) : t)
    const count = red(kept ? kept.sum(1, true) : data.builder.scalar(data.shape[1]!))
    mean = red(sumRows(data)).div(count)
    variance = red(sumRows(data.sub(mean).square())).div(count)
  }
  const bm = withDecay(s.batchMean, s.batchMeanNeedsInit, mean, cfg.affine_param_batch_decay)
  const bv = withDecay(s.batchVariance, s.batchVarianceNeedsInit, variance, cfg.affine_param_batch_decay)
  return { ...next, batchMean: bm.value, batchMeanNeedsInit: bm.needsInit, batchVariance: bv.value, batchVarianceNeedsInit: bv.needsInit }
}

const std = (variance: Tensor) => variance.maximum(1e-5).sqrt()

/** The codebook moved onto the batch's statistics: (e − μ_c)·(σ_b/σ_c) + μ_b. */
export const affineCodebook = (s: AffineState, embed: Tensor): Tensor =>
  embed.sub(s.codebookMean).mul(std(s.batchVariance).div(std(s.codebookVariance))).add(s.batchMean)

/** The batch moved onto the codebook's statistics, for the EMA sums: (x − μ_b)·(σ_c/σ_b) + μ_c. */
export const affineInput = (s: AffineState, flat: Tensor): Tensor =>
  flat.sub(s.batchMean).mul(std(s.codebookVariance).div(std(s.batchVariance))).add(s.codebookMean)
