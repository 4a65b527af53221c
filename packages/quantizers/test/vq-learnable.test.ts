import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { localCollectives, random, runCollective, traceOrThrow, valueAndGrad } from '@tessera/core'
// the optimizers users pass are @tessera/nn's; this package does not depend on it, so the test reads its source
import { adam, sgd } from '../../nn/src/optim.js'
import type { Init, Named } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js'
import { joinStateDict, splitStateDict } from '../src/io/state-dict.js'
import { loadTorchStateDict } from '../src/io/torch.js'
import { linearStage } from '../src/sequential/sequential.js'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { AFFINE } from '../src/vq/affine.js'
import { arr, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { tolerance } from './matrix-common.js'
import { lanes, near, reference, rowsOf, vqRun, withState } from './vq-reparam-helpers.js'

/**
 * learnable_codebook with vq_bridge and the in-place codebook optimizer, against float64
 * transcriptions of the reference's forward: the in-place step on mse(first pass's codes, input),
 * the second pass with the stepped codebook, the optimizer's state in the quantizer's state.
 */

const D = 4, K = 8, LR = 0.5
const learnable = { dim: D, codebook_size: K, learnable_codebook: true, ema_update: false, rotation_trick: false }
const tol = (backend: Backend) => (w: number) => Math.max(5e-5 * Math.max(1, Math.abs(w)), 4 * tolerance(backend.caps, w))

const nearest = (codes: number[][], r: number[]) => {
  let best = 0, bestD = Infinity
  codes.forEach((e, k) => {
    const d = e.reduce((s, v, j) => s + (v - r[j]!) ** 2, 0)
    if (d < bestD) (best = k), (bestD = d)
  })
  return best
}
const mse = (codes: number[][], ind: number[], x: number[][]) => ind.reduce((s, k, i) => s + codes[k]!.reduce((t, v, j) => t + (v - x[i]![j]!) ** 2, 0), 0) / (x.length * D)
/** d mse / d codes: 2/(N·d) Σ_{i→k} (code_k − x_i). */
const mseGrad = (codes: number[][], ind: number[], x: number[][]) => {
  const g = codes.map((c) => c.map(() => 0))
  ind.forEach((k, i) => codes[k]!.forEach((v, j) => (g[k]![j] += (2 * (v - x[i]![j]!)) / (x.length * D))))
  return g
}

describeLanes('vq-learnable', lanes, (lane) => `VectorQuantize learnable codebook: bridge and in-place optimizer on ${lane.name}`, (backend) => {
  const x = randn([2, 6, D], 31)
  const xs = rowsOf(x, D)

  it('an identity vq_bridge gives exactly the outputs of no bridge', async () => {
    const plain = orThrow(vectorQuantize(learnable))
    const bridged = orThrow(vectorQuantize({ ...learnable, vq_bridge: (e: Tensor) => e }))
    const init = plain.init(random.keyFromSeed(32))
    for (const training of [false, true]) {
      const a = await vqRun(backend, bridged, init, x, { training })
      const b = await vqRun(backend, plain, init, x, { training })
      expect(arr(a.indices)).toEqual(arr(b.indices))
      expect(arr(a.quantized)).toEqual(arr(b.quantized))
      expect(arr(a.loss)).toEqual(arr(b.loss))
    }
  })

  it('distances and codes come from the bridged codebook; codes from indices stay the raw codebook (the reference\'s get_output_from_indices)', async () => {
    const q = orThrow(vectorQuantize({ ...learnable, vq_bridge: (e: Tensor) => e.mul(2).add(0.25) }))
    const init = q.init(random.keyFromSeed(33))
    const raw = rowsOf(init.params['_codebook.embed']!, D)
    const moved = raw.map((e) => e.map((v) => 2 * v + 0.25))
    const r = await vqRun(backend, q, init, x, { training: false })
    const ind = xs.map((row) => nearest(moved, row))
    expect(arr(r.indices)).toEqual(ind)
    near(r.quantized.data, ind.flatMap((k) => moved[k]!), tol(backend), 'quantized')
    const codes = orThrow(await runOnHost(backend, [init.params, r.indices] as const, (p, i) => q.indicesToCodes(p as Named<Tensor>, i as Tensor)))
    near((codes as HostTensor).data, ind.flatMap((k) => raw[k]!), tol(backend), 'indicesToCodes')
  })

  it('in-place SGD: the codebook steps on mse(codes, input), the second pass quantizes with it, the codes move toward the inputs', async () => {
    const q = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    const init = q.init(random.keyFromSeed(34))
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    const ind1 = xs.map((row) => nearest(e0, row))
    const g = mseGrad(e0, ind1, xs)
    const e1 = e0.map((c, k) => c.map((v, j) => v - LR * g[k]![j]!))
    const ind2 = xs.map((row) => nearest(e1, row))
    const r = await vqRun(backend, q, init, x, { training: true })
    near(r.updatedParams['_codebook.embed']!.data, e1.flat(), tol(backend), 'stepped codebook')
    near(r.losses['inplace_optimize']!.data, [mse(e0, ind1, xs)], tol(backend), 'in-place loss')
    expect(arr(r.indices)).toEqual(ind2)
    near(r.quantized.data, ind2.flatMap((k) => e1[k]!), tol(backend), 'quantized (second pass)')
    near(r.losses['commitment']!.data, [mse(e1, ind2, xs)], tol(backend), 'commitment (second pass)')
    expect(mse(e1, ind2, xs)).toBeLessThan(mse(e0, ind1, xs))
    expect(arr(r.state['in_place_codebook_optimizer.step']!)).toEqual([1])
    // eval and a frozen codebook take no step
    const ev = await vqRun(backend, q, init, x, { training: false })
    expect(Object.keys(ev.updatedParams)).toEqual([])
    expect(arr(ev.state['in_place_codebook_optimizer.step']!)).toEqual([0])
    const frozen = await vqRun(backend, q, init, x, { training: true, freezeCodebook: true })
    expect(Object.keys(frozen.updatedParams)).toEqual([])
  })

  it('a bridge with parameters: the in-place step moves the codebook and the bridge\'s weight by the gradients through the bridge', async () => {
    const q = orThrow(vectorQuantize({ ...learnable, vq_bridge: linearStage(D, D, false), in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    expect(q.paramSpecs['_codebook.vq_bridge.weight']).toEqual({ shape: [D, D], dtype: 'float32' })
    const init = q.init(random.keyFromSeed(35))
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    const W = rowsOf(init.params['_codebook.vq_bridge.weight']!, D)
    const moved = e0.map((e) => W.map((wr) => wr.reduce((s, v, j) => s + v * e[j]!, 0)))
    const ind = xs.map((row) => nearest(moved, row))
    const gm = mseGrad(moved, ind, xs) // d loss / d moved code
    const gW = W.map((_, o) => W[0]!.map((__, j) => gm.reduce((s, g, k) => s + g[o]! * e0[k]![j]!, 0)))
    const gE = e0.map((_, k) => e0[0]!.map((__, j) => W.reduce((s, wr, o) => s + wr[j]! * gm[k]![o]!, 0)))
    const r = await vqRun(backend, q, init, x, { training: true })
    near(r.updatedParams['_codebook.vq_bridge.weight']!.data, W.flatMap((wr, o) => wr.map((v, j) => v - LR * gW[o]![j]!)), tol(backend), 'stepped bridge weight')
    near(r.updatedParams['_codebook.embed']!.data, e0.flatMap((e, k) => e.map((v, j) => v - LR * gE[k]![j]!)), tol(backend), 'stepped codebook')
  })

  it('with affine_param: the step is on the moved codebook\'s loss, and the second pass moves the statistics again (as the reference\'s update_affine runs in both)', async () => {
    const BD = 0.7, CD = 0.6
    const q = orThrow(vectorQuantize({ ...learnable, affine_param: true, affine_param_batch_decay: BD, affine_param_codebook_decay: CD, in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    const fresh = q.init(random.keyFromSeed(37))
    const start = { bm: [0.1, -0.2, 0.3, 0], bv: [0.9, 1.4, 0.6, 1], cm: [0.05, 0, -0.1, 0.02], cv: [0.02, 0.05, 0.03, 0.04] }
    const init = withState(fresh, {
      [AFFINE.batchMean]: start.bm, [AFFINE.batchVariance]: start.bv, [AFFINE.codebookMean]: start.cm, [AFFINE.codebookVariance]: start.cv,
      [AFFINE.batchMeanNeedsInit]: false, [AFFINE.batchVarianceNeedsInit]: false, [AFFINE.codebookMeanNeedsInit]: false, [AFFINE.codebookVarianceNeedsInit]: false,
    })
    const mean = (r: number[][]) => r[0]!.map((_, j) => r.reduce((t, v) => t + v[j]!, 0) / r.length)
    const vari = (r: number[][]) => mean(r).map((m, j) => r.reduce((t, v) => t + (v[j]! - m) ** 2, 0) / r.length)
    const mix = (o: number[], v: number[], dc: number) => o.map((a, j) => a * dc + v[j]! * (1 - dc))
    const stats = (s: typeof start, e: number[][]) => ({ cm: mix(s.cm, mean(e), CD), cv: mix(s.cv, vari(e), CD), bm: mix(s.bm, mean(xs), BD), bv: mix(s.bv, vari(xs), BD) })
    const scale = (s: typeof start) => s.bv.map((b, j) => Math.sqrt(Math.max(b, 1e-5)) / Math.sqrt(Math.max(s.cv[j]!, 1e-5)))
    const move = (s: typeof start, e: number[][]) => e.map((r) => r.map((v, j) => (v - s.cm[j]!) * scale(s)[j]! + s.bm[j]!))
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    const s1 = stats(start, e0)
    const m1 = move(s1, e0)
    const ind1 = xs.map((row) => nearest(m1, row))
    const g = mseGrad(m1, ind1, xs).map((r) => r.map((v, j) => v * scale(s1)[j]!))
    const e1 = e0.map((c, k) => c.map((v, j) => v - LR * g[k]![j]!))
    const s2 = stats(s1, e1)
    const m2 = move(s2, e1)
    const ind2 = xs.map((row) => nearest(m2, row))
    const r = await vqRun(backend, q, init, x, { training: true })
    near(r.updatedParams['_codebook.embed']!.data, e1.flat(), tol(backend), 'stepped codebook')
    for (const [name, want] of [[AFFINE.codebookMean, s2.cm], [AFFINE.codebookVariance, s2.cv], [AFFINE.batchMean, s2.bm], [AFFINE.batchVariance, s2.bv]] as const)
      near(r.state[name]!.data, want, tol(backend), `${name} after two passes`)
    expect(arr(r.indices)).toEqual(ind2)
    near(r.quantized.data, ind2.flatMap((k) => m2[k]!), tol(backend), 'quantized (second pass, moved codebook)')
  })

  it('manual_in_place_optimizer_update: the forward hands the gradient back; updateInPlaceOptimizer with it is the automatic step', async () => {
    const opt = orThrow(sgd({ lr: LR }))
    const auto = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: opt }))
    const manual = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: opt, manual_in_place_optimizer_update: true }))
    const init = auto.init(random.keyFromSeed(36))
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    const a = await vqRun(backend, auto, init, x, { training: true })
    const m = await vqRun(backend, manual, init, x, { training: true })
    near(m.extra['in_place_grad._codebook.embed']!.data, mseGrad(e0, xs.map((row) => nearest(e0, row)), xs).flat(), tol(backend), 'in-place gradient')
    expect(Object.keys(m.updatedParams)).toEqual([])
    expect(arr(m.state['in_place_codebook_optimizer.step']!)).toEqual([0])
    const stepped = orThrow(
      await runOnHost(backend, [init.params, m.state, { '_codebook.embed': m.extra['in_place_grad._codebook.embed']! }] as const, (p, s, g) =>
        manual.updateInPlaceOptimizer(p as Named<Tensor>, s as Named<Tensor>, g as Named<Tensor>),
      ),
    ) as unknown as { params: Record<string, HostTensor>; state: Record<string, HostTensor> }
    near(stepped.params['_codebook.embed']!.data, arr(a.updatedParams['_codebook.embed']!), tol(backend), 'manual step')
    expect(arr(stepped.state['in_place_codebook_optimizer.step']!)).toEqual([1])
  })
})

describe('in-place optimizer state', () => {
  const x = randn([2, 5, D], 41)
  const xs = rowsOf(x, D)
  const opt = orThrow(adam({ lr: 0.1 }))
  const q: VectorQuantize = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: opt }))

  it('Adam: two steps with the state fed back equal a float64 Adam on the in-place gradients', async () => {
    let init: Init = q.init(random.keyFromSeed(42))
    let p = rowsOf(init.params['_codebook.embed']!, D).flat()
    let m = p.map(() => 0), v = p.map(() => 0)
    for (let t = 1; t <= 2; t++) {
      const codes = Array.from({ length: K }, (_, k) => p.slice(k * D, k * D + D))
      const g = mseGrad(codes, xs.map((row) => nearest(codes, row)), xs).flat()
      m = m.map((mi, i) => 0.9 * mi + 0.1 * g[i]!)
      v = v.map((vi, i) => 0.999 * vi + 0.001 * g[i]! ** 2)
      const bc1 = 1 - 0.9 ** t, bc2 = 1 - 0.999 ** t
      p = p.map((pi, i) => pi - (0.1 / bc1) * (m[i]! / (Math.sqrt(v[i]!) / Math.sqrt(bc2) + 1e-8)))
      const r = await vqRun(reference, q, init, x, { training: true })
      near(r.state['in_place_codebook_optimizer._codebook.embed.exp_avg']!.data, m, () => 1e-5, `step ${t} exp_avg`)
      near(r.state['in_place_codebook_optimizer._codebook.embed.exp_avg_sq']!.data, v, () => 1e-6, `step ${t} exp_avg_sq`)
      near(r.updatedParams['_codebook.embed']!.data, p, () => 1e-4, `step ${t} codebook`)
      expect(arr(r.state['in_place_codebook_optimizer.step']!)).toEqual([t])
      // the caller adopts the stepped codebook and the new state
      init = { params: { ...init.params, ...r.updatedParams }, state: r.state }
    }
    // the state round-trips through a safetensors file
    const back = orThrow(decodeSafetensors(encodeSafetensors(joinStateDict(init))))
    const split = orThrow(splitStateDict(q, back.tensors))
    for (const [k, t] of Object.entries(init.state)) expect(arr(split.state[k]!), k).toEqual(arr(t))
  })

  it('a torch checkpoint has no optimizer state: loadTorchStateDict starts it fresh', () => {
    const init = q.init(random.keyFromSeed(43))
    const torch = Object.fromEntries(Object.entries(joinStateDict(init)).filter(([k]) => !k.startsWith('in_place_codebook_optimizer.')))
    const loaded = orThrow(loadTorchStateDict(q, torch))
    expect(arr(loaded.state['in_place_codebook_optimizer.step']!)).toEqual([0])
    expect(arr(loaded.state['in_place_codebook_optimizer._codebook.embed.exp_avg']!).every((v) => v === 0)).toBe(true)
    expect(arr(loaded.params['_codebook.embed']!)).toEqual(arr(init.params['_codebook.embed']!))
  })

  it('gradients after the step are those of the stepped codebook (torch writes the data, gradients stay on the parameter)', async () => {
    const sq = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    const init = sq.init(random.keyFromSeed(44))
    const r = orThrow(
      await runOnHost(reference, [init.params, init.state, x] as const, (p, s, xx) => {
        const f = (pi: Named<Tensor>, si: Named<Tensor>, xi: Tensor) => {
          const res = sq.apply(pi, si, xi, { training: true })
          return { loss: res.loss, stepped: res.updatedParams!['_codebook.embed']!, indices: res.indices }
        }
        const { value, grad } = valueAndGrad(f, 0)(p as Named<Tensor>, s as Named<Tensor>, xx as Tensor)
        return { g: grad['_codebook.embed']!, stepped: value.stepped, indices: value.indices }
      }),
    ) as unknown as { g: HostTensor; stepped: HostTensor; indices: HostTensor }
    const e1 = rowsOf(r.stepped, D)
    near(r.g.data, mseGrad(e1, arr(r.indices), xs).flat(), () => 1e-5, 'd commitment / d codebook at the stepped values')
  })

  it('with a token mask the in-place loss is the mean over kept tokens only', async () => {
    const sq = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    const init = sq.init(random.keyFromSeed(46))
    const keep = [true, false, true, true, false, true, false, true, true, true]
    const mask = { shape: [2, 5], dtype: 'bool' as const, data: Uint8Array.from(keep, Number) }
    const r = orThrow(
      await runOnHost(reference, [init.params, init.state, x, mask] as const, (p, s, xx, m) => {
        const res = sq.apply(p as Named<Tensor>, s as Named<Tensor>, xx as Tensor, { training: true, mask: m as Tensor })
        return { loss: res.losses['inplace_optimize']!, stepped: res.updatedParams!['_codebook.embed']! }
      }),
    ) as unknown as { loss: HostTensor; stepped: HostTensor }
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    const kept = xs.filter((_, i) => keep[i])
    const ind = kept.map((row) => nearest(e0, row))
    near(r.loss.data, [mse(e0, ind, kept)], () => 1e-5, 'masked in-place loss')
    const g = mseGrad(e0, ind, kept)
    near(r.stepped.data, e0.flatMap((c, k) => c.map((v, j) => v - LR * g[k]![j]!)), () => 1e-5, 'stepped with the kept tokens\' gradient')
  })

  it('accum_ema_update with an in-place step: the accumulator holds the first pass\'s counts (the second pass makes no update)', async () => {
    const sq = orThrow(vectorQuantize({ ...learnable, threshold_ema_dead_code: 1, in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    const init = sq.init(random.keyFromSeed(47))
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    const counts = new Array(K).fill(0)
    for (const row of xs) counts[nearest(e0, row)]++
    const r = await vqRun(reference, sq, init, x, { training: true, key: [1, 2], accumEmaUpdate: true })
    expect(arr(r.extra['ema_accum_cluster_size']!)).toEqual(counts)
  })

  it('synced (sync_codebook, traced with a world): the in-place gradients are averaged over the ranks, so every rank steps as one process on the whole batch', async () => {
    const sq = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: orThrow(sgd({ lr: LR })) }))
    const init = sq.init(random.keyFromSeed(48))
    const whole = await vqRun(reference, sq, init, x, { training: true })
    const shard = (r: number) => ({ shape: [1, 5, D], dtype: 'float32' as const, data: x.data.slice(r * 5 * D, (r + 1) * 5 * D) })
    const traced = traceOrThrow([init.params, init.state, shard(0)] as const, (p, st, xx) => sq.apply(p as Named<Tensor>, st as Named<Tensor>, xx as Tensor, { training: true, world: { size: 2 } }).updatedParams!['_codebook.embed']!)
    const leaves = (r: number) => [...Object.values(init.params), ...Object.values(init.state), shard(r)]
    const got = await Promise.all(localCollectives(2).map((comm) => runCollective(reference, traced.program, leaves(comm.rank), comm)))
    for (const g of got) near(orThrow(g)[0]!.data, arr(whole.updatedParams['_codebook.embed']!), () => 1e-5, 'each rank\'s stepped codebook')
  })

  it('synced manual update: the forward hands back this rank\'s gradient; updateInPlaceOptimizer with the world averages it', async () => {
    const opt = orThrow(sgd({ lr: LR }))
    const auto = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: opt }))
    const manual = orThrow(vectorQuantize({ ...learnable, in_place_codebook_optimizer: opt, manual_in_place_optimizer_update: true }))
    const init = auto.init(random.keyFromSeed(49))
    const whole = await vqRun(reference, auto, init, x, { training: true })
    const shard = (r: number) => ({ shape: [1, 5, D], dtype: 'float32' as const, data: x.data.slice(r * 5 * D, (r + 1) * 5 * D) })
    const traced = traceOrThrow([init.params, init.state, shard(0)] as const, (p, st, xx) => {
      const P = p as Named<Tensor>, S = st as Named<Tensor>
      const res = manual.apply(P, S, xx as Tensor, { training: true, world: { size: 2 } })
      const g = res.extra!['in_place_grad._codebook.embed']!
      return [g, manual.updateInPlaceOptimizer(P, res.state, { '_codebook.embed': g }, { world: { size: 2 } }).params['_codebook.embed']!]
    })
    const leaves = (r: number) => [...Object.values(init.params), ...Object.values(init.state), shard(r)]
    const got = await Promise.all(localCollectives(2).map((comm) => runCollective(reference, traced.program, leaves(comm.rank), comm)))
    const e0 = rowsOf(init.params['_codebook.embed']!, D)
    got.forEach((g, r) => {
      const [local, stepped] = orThrow(g)
      const rows = xs.slice(r * 5, r * 5 + 5)
      near(local!.data, mseGrad(e0, rows.map((row) => nearest(e0, row)), rows).flat(), () => 1e-5, `rank ${r}'s own gradient`)
      near(stepped!.data, arr(whole.updatedParams['_codebook.embed']!), () => 1e-5, `rank ${r}'s stepped codebook`)
    })
  })

  it('refusals: in-place optimizer without a learnable codebook, with topk in the call', async () => {
    const bad = vectorQuantize({ dim: D, codebook_size: K, in_place_codebook_optimizer: orThrow(sgd({ lr: 1 })) })
    expect(E.isLeft(bad) && bad.left.where).toBe('VectorQuantize.in_place_codebook_optimizer')
    const init = q.init(random.keyFromSeed(45))
    await expect(vqRun(reference, q, init, x, { training: true, topk: 2 })).rejects.toThrow(/in_place_codebook_optimizer.*topk/)
  })
})
