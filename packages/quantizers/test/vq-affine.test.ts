import { describe, expect, it } from 'vitest'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random } from '@tessera/core'
import { joinStateDict } from '../src/io/state-dict.js'
import type { Named } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import { loadTorchStateDict } from '../src/io/torch.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { AFFINE } from '../src/vq/affine.js'
import { arr, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { tolerance } from './matrix-common.js'
import { lanes, near, reference, rowsOf, vqRun, withState } from './vq-reparam-helpers.js'

/**
 * affine_param: the running batch and codebook statistics follow their decays (checked against a
 * float64 transcription of the reference's update_affine and forward), the codebook is moved onto
 * the batch's statistics for distances and codes, the batch onto the codebook's for the EMA sums.
 */

const D = 3, K = 5, BD = 0.7, CD = 0.6, DECAY = 0.8
const base = { dim: D, codebook_size: K, rotation_trick: false, decay: DECAY, affine_param: true, affine_param_batch_decay: BD, affine_param_codebook_decay: CD }

const mean = (rows: number[][]) => rows[0]!.map((_, j) => rows.reduce((s, r) => s + r[j]!, 0) / rows.length)
const variance = (rows: number[][]) => {
  const m = mean(rows)
  return m.map((mj, j) => rows.reduce((s, r) => s + (r[j]! - mj) ** 2, 0) / rows.length)
}
const mix = (old: number[], v: number[], decay: number) => old.map((o, j) => o * decay + v[j]! * (1 - decay))
const std = (v: number[]) => v.map((x) => Math.sqrt(Math.max(x, 1e-5)))

/** The reference's forward with affine params on one codebook, in float64. */
function hostAffine(x: number[][], embed: number[][], ea0: number[][], cs0: number[], start: { bm: number[]; bv: number[]; cm: number[]; cv: number[] } | null, training: boolean) {
  const init = start === null
  const cm = !training ? start?.cm ?? [] : init ? mean(embed) : mix(start.cm, mean(embed), CD)
  const cv = !training ? start?.cv ?? [] : init ? variance(embed) : mix(start.cv, variance(embed), CD)
  const bm = init ? mean(x) : mix(start.bm, mean(x), BD)
  const bv = init ? variance(x) : mix(start.bv, variance(x), BD)
  const sb = std(bv), sc = std(cv)
  const moved = embed.map((e) => e.map((v, j) => (v - cm[j]!) * (sb[j]! / sc[j]!) + bm[j]!))
  const ind = x.map((r) => {
    let best = 0, bestD = Infinity
    moved.forEach((e, k) => {
      const d = e.reduce((s, v, j) => s + (v - r[j]!) ** 2, 0)
      if (d < bestD) (best = k), (bestD = d)
    })
    return best
  })
  const xin = x.map((r) => r.map((v, j) => (v - bm[j]!) * (sc[j]! / sb[j]!) + cm[j]!))
  const counts = new Array(K).fill(0), sums = embed.map((e) => e.map(() => 0))
  ind.forEach((k, i) => {
    counts[k]++
    xin[i]!.forEach((v, j) => (sums[k]![j] += v))
  })
  const w = 1 - DECAY
  const cs = cs0.map((c, k) => c + w * (counts[k] - c))
  const ea = ea0.map((row, k) => row.map((a, j) => a + w * (sums[k]![j]! - a)))
  const commitment = ind.reduce((s, k, i) => s + moved[k]!.reduce((t, v, j) => t + (v - x[i]![j]!) ** 2, 0), 0) / (x.length * D)
  return { bm, bv, cm, cv, moved, ind, cs, ea, commitment }
}

const tol = (backend: Backend) => (w: number) => Math.max(2e-5 * Math.max(1, Math.abs(w)), tolerance(backend.caps, w))

describeLanes('vq-affine', lanes, (lane) => `VectorQuantize affine_param on ${lane.name}`, (backend) => {
  const q = orThrow(vectorQuantize(base))
  const x = randn([2, 6, D], 11)
  const fresh = q.init(random.keyFromSeed(12))
  const embed = rowsOf(fresh.state['_codebook.embed']!, D)
  const start = { bm: [0.1, -0.2, 0.3], bv: [0.9, 1.4, 0.6], cm: [0.05, 0, -0.1], cv: [0.02, 0.05, 0.03] }
  const known = withState(fresh, {
    [AFFINE.batchMean]: start.bm, [AFFINE.batchVariance]: start.bv, [AFFINE.codebookMean]: start.cm, [AFFINE.codebookVariance]: start.cv,
    [AFFINE.batchMeanNeedsInit]: false, [AFFINE.batchVarianceNeedsInit]: false, [AFFINE.codebookMeanNeedsInit]: false, [AFFINE.codebookVarianceNeedsInit]: false,
  })

  const check = (r: Awaited<ReturnType<typeof vqRun>>, want: ReturnType<typeof hostAffine>, training: boolean, what: string) => {
    const t = tol(backend)
    near(r.state[AFFINE.batchMean]!.data, want.bm, t, `${what} batch_mean`)
    near(r.state[AFFINE.batchVariance]!.data, want.bv, t, `${what} batch_variance`)
    near(r.state[AFFINE.codebookMean]!.data, want.cm, t, `${what} codebook_mean`)
    near(r.state[AFFINE.codebookVariance]!.data, want.cv, t, `${what} codebook_variance`)
    expect(arr(r.indices)).toEqual(want.ind)
    near(r.quantized.data, want.ind.flatMap((k) => want.moved[k]!), t, `${what} quantized (the moved codebook's rows)`)
    if (training) {
      near(r.state['_codebook.cluster_size']!.data, want.cs, t, `${what} cluster_size`)
      near(r.state['_codebook.embed_avg']!.data, want.ea.flat(), t, `${what} embed_avg (sums of the moved batch)`)
      near(r.losses['commitment']!.data, [want.commitment], t, `${what} commitment`)
    }
  }

  it('training from a known start: every buffer moves by its decay; codes and EMA sums use the moved codebook and batch', async () => {
    const r = await vqRun(backend, q, known, x, { training: true })
    check(r, hostAffine(rowsOf(x, D), embed, rowsOf(fresh.state['_codebook.embed_avg']!, D), arr(fresh.state['_codebook.cluster_size']!), start, true), true, 'train')
    for (const f of ['batchMeanNeedsInit', 'batchVarianceNeedsInit', 'codebookMeanNeedsInit', 'codebookVarianceNeedsInit'] as const) expect(arr(r.state[AFFINE[f]]!)).toEqual([0])
  })

  it('a fresh module: the first training call sets every statistic outright', async () => {
    const r = await vqRun(backend, q, fresh, x, { training: true })
    check(r, hostAffine(rowsOf(x, D), embed, rowsOf(fresh.state['_codebook.embed_avg']!, D), arr(fresh.state['_codebook.cluster_size']!), null, true), true, 'first call')
  })

  it('eval moves the batch statistics only (as the reference does), codebook statistics and their flags stay', async () => {
    const r = await vqRun(backend, q, known, x, { training: false })
    check(r, hostAffine(rowsOf(x, D), embed, [], [], start, false), false, 'eval')
    const e2 = await vqRun(backend, q, fresh, x, { training: false })
    expect(arr(e2.state[AFFINE.batchMeanNeedsInit]!)).toEqual([0])
    expect(arr(e2.state[AFFINE.codebookMeanNeedsInit]!)).toEqual([1])
    near(e2.state[AFFINE.batchMean]!.data, mean(rowsOf(x, D)), tol(backend), 'eval batch_mean set outright')
  })

  it('identity statistics that do not move (decays 1) give exactly the outputs of no affine', async () => {
    const plain = orThrow(vectorQuantize({ dim: D, codebook_size: K, rotation_trick: false, decay: DECAY }))
    const ident = orThrow(vectorQuantize({ ...base, affine_param_batch_decay: 1, affine_param_codebook_decay: 1 }))
    const init = withState(ident.init(random.keyFromSeed(12)), {
      [AFFINE.batchMean]: [0, 0, 0], [AFFINE.batchVariance]: [1, 1, 1], [AFFINE.codebookMean]: [0, 0, 0], [AFFINE.codebookVariance]: [1, 1, 1],
      [AFFINE.batchMeanNeedsInit]: false, [AFFINE.batchVarianceNeedsInit]: false, [AFFINE.codebookMeanNeedsInit]: false, [AFFINE.codebookVarianceNeedsInit]: false,
    })
    const plainInit = { params: init.params, state: Object.fromEntries(Object.entries(init.state).filter(([k]) => k in plain.stateSpecs)) }
    for (const training of [false, true]) {
      const a = await vqRun(backend, ident, init, x, { training })
      const b = await vqRun(backend, plain, plainInit, x, { training })
      expect(arr(a.indices)).toEqual(arr(b.indices))
      expect(arr(a.quantized)).toEqual(arr(b.quantized))
      expect(arr(a.loss)).toEqual(arr(b.loss))
      for (const k of Object.keys(b.state)) expect(arr(a.state[k]!), k).toEqual(arr(b.state[k]!))
    }
  })

  it('sync_affine_param (sums and counts, reduced across one rank) agrees with the local statistics', async () => {
    const sync = orThrow(vectorQuantize({ ...base, sync_affine_param: true }))
    const a = await vqRun(backend, sync, known, x, { training: true })
    const b = await vqRun(backend, q, known, x, { training: true })
    expect(arr(a.indices)).toEqual(arr(b.indices))
    for (const k of Object.values(AFFINE)) near(a.state[k]!.data, arr(b.state[k]!), tol(backend), k)
  })
})

describe('VectorQuantize affine_param with a token mask', () => {
  it('the batch statistics are over the kept tokens only (the reference\'s data[mask]); sync or not', async () => {
    const x = randn([2, 5, D], 51)
    const keep = [true, false, true, true, false, true, true, false, true, true]
    const mask = { shape: [2, 5], dtype: 'bool' as const, data: Uint8Array.from(keep, Number) }
    const kept = rowsOf(x, D).filter((_, i) => keep[i])
    for (const sync of [false, true]) {
      const q = orThrow(vectorQuantize({ ...base, sync_affine_param: sync }))
      const init = q.init(random.keyFromSeed(52))
      const r = orThrow(
        await runOnHost(reference, [init.params, init.state, x, mask] as const, (p, st, xx, m) => {
          const res = q.apply(p as Named<Tensor>, st as Named<Tensor>, xx as Tensor, { training: true, mask: m as Tensor })
          return { ...res.state }
        }),
      ) as unknown as Record<string, HostTensor>
      near(r[AFFINE.batchMean]!.data, mean(kept), () => 1e-5, `sync ${sync}: batch_mean over kept tokens`)
      near(r[AFFINE.batchVariance]!.data, variance(kept), () => 1e-5, `sync ${sync}: batch_variance over kept tokens`)
    }
  })
})

describe('VectorQuantize affine_param state dict', () => {
  const q = orThrow(vectorQuantize(base))
  const init = q.init(random.keyFromSeed(3))
  const torchDict = (withBatch: boolean): Record<string, HostTensor> => {
    const sd = joinStateDict(init)
    // torch has no such flags, and registers the batch statistics only at the first forward
    delete sd[AFFINE.batchMeanNeedsInit]
    delete sd[AFFINE.batchVarianceNeedsInit]
    if (!withBatch) {
      delete sd[AFFINE.batchMean]
      delete sd[AFFINE.batchVariance]
    }
    return sd
  }
  it('the buffers have the reference names and shapes', () => {
    for (const n of ['batch_mean', 'batch_variance', 'codebook_mean', 'codebook_variance']) expect(q.stateSpecs[`_codebook.${n}`]).toEqual({ shape: [1, 1, D], dtype: 'float32' })
    for (const n of ['codebook_mean_needs_init', 'codebook_variance_needs_init']) expect(q.stateSpecs[`_codebook.${n}`]).toEqual({ shape: [], dtype: 'bool' })
  })
  it('loadTorchStateDict: a module saved before its first forward lacks the batch statistics (flags say so); a trained one has them', () => {
    const before = orThrow(loadTorchStateDict(q, torchDict(false)))
    expect(arr(before.state[AFFINE.batchMeanNeedsInit]!)).toEqual([1])
    expect(arr(before.state[AFFINE.batchVarianceNeedsInit]!)).toEqual([1])
    const after = orThrow(loadTorchStateDict(q, torchDict(true)))
    expect(arr(after.state[AFFINE.batchMeanNeedsInit]!)).toEqual([0])
    expect(arr(after.state[AFFINE.batchMean]!)).toEqual(arr(init.state[AFFINE.batchMean]!))
  })
})
