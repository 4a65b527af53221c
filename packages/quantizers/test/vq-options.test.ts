import { expect, it } from 'vitest'
import { fc } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'
import { arr, orThrow, randn } from './helpers.js'
import { maskOf, maxDiff, vqCall, vqCallOk } from './vq-call.js'

const build = (o: Record<string, unknown>): VectorQuantize => orThrow(vectorQuantize(o))
const b = 2, n = 4, d = 3, K = 6

/** float64 cross entropy of logits rows (M, K) against targets, mean over targets other than -1 */
function hostCrossEntropy(logits: ArrayLike<number>, targets: ArrayLike<number>, k: number): number {
  let s = 0, m = 0
  for (let r = 0; r < targets.length; r++) {
    const t = targets[r]!
    if (t === -1) continue
    const row = Array.from({ length: k }, (_, j) => logits[r * k + j]!)
    const mx = Math.max(...row)
    const lse = mx + Math.log(row.reduce((a, v) => a + Math.exp(v - mx), 0))
    s += lse - row[t]!
    m++
  }
  return s / m
}

const close = (got: number, want: number, tol = 1e-5) => expect(Math.abs(got - want), `${got} vs ${want}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(want)))

describeLanes('vq-options', nodeLanes, (lane) => `VectorQuantize forward options on ${lane.name}`, (backend) => {
  it('topk: k nearest codes, nearest first, the first equal to argmin; codes gathered; no codebook update', async () => {
    // no gradient routing, so the training output is the code row itself, not its rotation
    const q = build({ dim: d, codebook_size: K, route_gradients_to_input: false })
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: K }), fc.integer({ min: 1, max: 1000 }), async (k, seed) => {
        const init = q.init(random.keyFromSeed(seed))
        const x = randn([b, n, d], seed + 1)
        const one = await vqCallOk(backend, q, init, x, { training: true, opts: () => ({ freezeCodebook: true }) })
        const top = await vqCallOk(backend, q, init, x, { training: true, opts: () => ({ topk: k }) })
        expect(top.indices.shape).toEqual([b, n, k])
        expect(top.quantized.shape).toEqual([b, n, k, d])
        expect(top.losses['commitment']!.shape).toEqual([b, n, k])
        const dist = one.extra['codebook_dist']!.data // (1, b, n, K), negative distances
        const embed = init.state['_codebook.embed']!.data
        for (let t = 0; t < b * n; t++) {
          expect(top.indices.data[t * k]).toBe(one.indices.data[t])
          const picked = Array.from(top.indices.data.subarray(t * k, (t + 1) * k))
          expect(new Set(picked).size).toBe(k)
          for (let j = 0; j + 1 < k; j++) expect(dist[t * K + picked[j]!]!).toBeGreaterThanOrEqual(dist[t * K + picked[j + 1]!]!)
          // no code left out is nearer than the k-th
          for (let c = 0; c < K; c++) if (!picked.includes(c)) expect(dist[t * K + c]!).toBeLessThanOrEqual(dist[t * K + picked[k - 1]!]!)
          for (let j = 0; j < k; j++)
            for (let e = 0; e < d; e++) expect(top.quantized.data[(t * k + j) * d + e]).toBe(embed[picked[j]! * d + e])
        }
        for (const name of Object.keys(init.state)) expect(arr(top.state[name]!), name).toEqual(arr(init.state[name]!))
      }),
      { numRuns: 3 },
    )
  })

  it('topk with a mask: masked-out tokens get -1 for every rank, zero codes and zero commitment', async () => {
    const q = build({ dim: d, codebook_size: K, route_gradients_to_input: false })
    const init = q.init(random.keyFromSeed(30))
    const x = randn([b, n, d], 31)
    const mask = maskOf([[1, 0, 1, 1], [0, 0, 1, 0]])
    const k = 3
    const m = await vqCallOk(backend, q, init, x, { training: true, tensors: { m: mask }, opts: (t) => ({ topk: k, mask: t['m']! }) })
    const plain = await vqCallOk(backend, q, init, x, { training: true, opts: () => ({ topk: k }) })
    for (let t = 0; t < b * n; t++)
      for (let j = 0; j < k; j++) {
        const i = t * k + j
        const kept = mask.data[t] === 1
        expect(m.indices.data[i]).toBe(kept ? plain.indices.data[i] : -1)
        expect(m.losses['commitment']!.data[i]).toBe(kept ? plain.losses['commitment']!.data[i] : 0)
        for (let e = 0; e < d; e++) expect(m.quantized.data[i * d + e]).toBe(kept ? plain.quantized.data[i * d + e] : 0)
      }
  })

  it('target indices: the cross entropy of the distance logits, minimal at the nearest codes, -1 ignored', async () => {
    const q = build({ dim: d, codebook_size: K })
    const init = q.init(random.keyFromSeed(4))
    const x = randn([b, n, d], 5)
    const ev = await vqCallOk(backend, q, init, x)
    const logits = ev.extra['codebook_dist']!.data
    const ce = async (targets: number[]) => {
      const r = await vqCallOk(backend, q, init, x, { tensors: { t: tensorOf(targets, [b, n], 'int32') }, opts: (t) => ({ indices: t['t']! }) })
      expect(r.losses['cross_entropy']!.data[0]).toBe(r.loss.data[0])
      expect(r.quantized.shape).toEqual([b, n, d]) // the codebook's layout, as the reference returns it
      return r.loss.data[0]!
    }
    const nearest = Array.from(ev.indices.data)
    const best = await ce(nearest)
    expect(Number.isFinite(best)).toBe(true)
    close(best, hostCrossEntropy(logits, nearest, K))
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: -1, max: K - 1 }), { minLength: b * n, maxLength: b * n }), async (targets) => {
        targets[0] = targets[0] === -1 ? 0 : targets[0]!
        const got = await ce(targets)
        close(got, hostCrossEntropy(logits, targets, K))
        // per token, the nearest code has the largest logit: replacing kept targets by it cannot raise the mean
        const nearer = targets.map((t, i) => (t === -1 ? -1 : nearest[i]!))
        expect(await ce(nearer)).toBeLessThanOrEqual(got + 1e-6)
      }),
      { numRuns: 3 },
    )
  })

  it('commitment_use_cross_entropy_loss: the commitment is the cross entropy against the chosen codes, masked tokens ignored', async () => {
    const q = build({ dim: d, codebook_size: K, commitment_use_cross_entropy_loss: true, commitment_weight: 0.5 })
    const init = q.init(random.keyFromSeed(6))
    const x = randn([b, n, d], 7)
    const mask = maskOf([[1, 0, 1, 1], [0, 1, 1, 0]])
    const r = await vqCallOk(backend, q, init, x, { training: true, tensors: { m: mask }, opts: (t) => ({ mask: t['m']! }) })
    const want = hostCrossEntropy(r.extra['codebook_dist']!.data, r.indices.data, K)
    close(r.losses['commitment']!.data[0]!, want)
    close(r.loss.data[0]!, 0.5 * want)
    expect(Number.isFinite(want)).toBe(true)
  })

  it("orthogonal_reg_active_codes_only with the cross-entropy commitment and a mask counts the last code for -1, as the reference's codebook[:, -1]", async () => {
    const q = build({ dim: d, codebook_size: K, commitment_use_cross_entropy_loss: true, orthogonal_reg_weight: 1, orthogonal_reg_active_codes_only: true })
    const init = q.init(random.keyFromSeed(40))
    const x = randn([b, n, d], 41)
    const mask = maskOf([[1, 1, 0, 1], [1, 0, 1, 1]])
    const r = await vqCallOk(backend, q, init, x, { training: true, tensors: { m: mask }, opts: (t) => ({ mask: t['m']!, freezeCodebook: true }) })
    const kept = [...new Set(Array.from(r.indices.data).filter((i) => i !== -1))].sort((u, v) => u - v)
    const ids = [...kept, K - 1] // unique() of the indices with -1, then -1 picks the last code (twice if it is also used)
    const e = init.state['_codebook.embed']!.data
    const unit = ids.map((c) => {
      const row = Array.from({ length: d }, (_, j) => e[c * d + j]!)
      const nr = Math.max(Math.hypot(...row), 1e-6)
      return row.map((v) => v / nr)
    })
    let s2 = 0
    for (const u of unit) for (const v of unit) s2 += u.reduce((a, ui, j) => a + ui * v[j]!, 0) ** 2
    const m = ids.length
    close(r.losses['orthogonal_reg']!.data[0]!, s2 / (m * m) - 1 / m)
  })

  it('layernorm_after_project_in: project_in.0 (linear) then project_in.1 (LayerNorm, ones and zeros)', async () => {
    const q = build({ dim: 4, codebook_size: K, codebook_dim: 3, layernorm_after_project_in: true })
    expect(Object.keys(q.paramSpecs).sort()).toEqual(['project_in.0.bias', 'project_in.0.weight', 'project_in.1.bias', 'project_in.1.weight', 'project_out.bias', 'project_out.weight'])
    const init = q.init(random.keyFromSeed(8))
    expect(arr(init.params['project_in.1.weight']!)).toEqual([1, 1, 1])
    const g = randn([3], 9), beta = randn([3], 10)
    const params = { ...init.params, 'project_in.1.weight': g, 'project_in.1.bias': beta }
    const x = randn([b, n, 4], 11)
    const r = await vqCallOk(backend, q, { ...init, params }, x)
    const W = init.params['project_in.0.weight']!.data, bias = init.params['project_in.0.bias']!.data
    for (let t = 0; t < b * n; t++) {
      const y = [0, 1, 2].map((o) => bias[o]! + [0, 1, 2, 3].reduce((s, i) => s + W[o * 4 + i]! * x.data[t * 4 + i]!, 0))
      const mean = y.reduce((a, v) => a + v, 0) / 3
      const v = y.reduce((a, u) => a + (u - mean) ** 2, 0) / 3
      for (let o = 0; o < 3; o++) close(r.extra['projected']!.data[t * 3 + o]!, ((y[o]! - mean) / Math.sqrt(v + 1e-5)) * g.data[o]! + beta.data[o]!, 2e-5)
    }
    // without projections the option does nothing
    const same = build({ dim: d, codebook_size: K, layernorm_after_project_in: true })
    expect(Object.keys(same.paramSpecs)).toEqual([])
  })

  it('ema_update_weight: 1 is no weight, 0 freezes the statistics, a per-code tensor or function weights each code', async () => {
    const decay = 0.6
    const q = build({ dim: d, codebook_size: K, decay })
    const init = q.init(random.keyFromSeed(12))
    const x = randn([b, n, d], 13)
    const plain = await vqCallOk(backend, q, init, x, { training: true })
    const one = await vqCallOk(backend, q, init, x, { training: true, opts: () => ({ emaUpdateWeight: 1 }) })
    for (const k of Object.keys(plain.state)) expect(maxDiff(one.state[k]!.data, plain.state[k]!.data), k).toBeLessThanOrEqual(1e-6)
    const zero = await vqCallOk(backend, q, init, x, { training: true, opts: () => ({ emaUpdateWeight: 0 }) })
    expect(arr(zero.state['_codebook.cluster_size']!)).toEqual(arr(init.state['_codebook.cluster_size']!))
    expect(arr(zero.state['_codebook.embed_avg']!)).toEqual(arr(init.state['_codebook.embed_avg']!))
    const w = tensorOf([0, 0.5, 1, 1.5, 2, -0.25], [K])
    const byTensor = await vqCallOk(backend, q, init, x, { training: true, tensors: { w }, opts: (t) => ({ emaUpdateWeight: t['w']! }) })
    const byFn = await vqCallOk(backend, q, init, x, { training: true, tensors: { w }, opts: (t) => ({ emaUpdateWeight: (_sum: Tensor, counts: Tensor) => counts.mul(0).add(t['w']!) }) })
    const counts = new Array(K).fill(0)
    for (const i of plain.indices.data) counts[i]++
    const cs0 = init.state['_codebook.cluster_size']!.data
    for (let c = 0; c < K; c++) {
      const want = cs0[c]! + (1 - decay) * w.data[c]! * (counts[c] - cs0[c]!)
      close(byTensor.state['_codebook.cluster_size']!.data[c]!, want)
    }
    for (const k of Object.keys(byTensor.state)) expect(arr(byFn.state[k]!), k).toEqual(arr(byTensor.state[k]!))
  })

  it('accum_ema_update: accumulated batches then one EMA step equal one EMA step over all of them', async () => {
    const q = build({ dim: d, codebook_size: K })
    const init = q.init(random.keyFromSeed(14))
    const xs = [randn([b, n, d], 15), randn([b, n, d], 16), randn([b, n, d], 17)]
    let acc: Record<string, HostTensor> | undefined
    for (const x of xs.slice(0, 2)) {
      const r = await vqCallOk(backend, q, init, x, {
        training: true,
        tensors: acc ?? {},
        opts: (t) => ({ accumEmaUpdate: true, ...(acc ? { emaAccum: { clusterSize: t['cs']!, embedSum: t['es']! } } : {}) }),
      })
      for (const k of Object.keys(init.state)) expect(arr(r.state[k]!), k).toEqual(arr(init.state[k]!))
      acc = { cs: r.extra['ema_accum_cluster_size']!, es: r.extra['ema_accum_embed_sum']! }
    }
    const last = await vqCallOk(backend, q, init, xs[2]!, { training: true, tensors: acc!, opts: (t) => ({ emaAccum: { clusterSize: t['cs']!, embedSum: t['es']! } }) })
    expect(last.extra['ema_accum_cluster_size']).toBeUndefined()
    const all = tensorOf([...xs[0]!.data, ...xs[1]!.data, ...xs[2]!.data], [3 * b, n, d])
    const once = await vqCallOk(backend, q, init, all, { training: true })
    for (const k of Object.keys(once.state)) expect(maxDiff(last.state[k]!.data, once.state[k]!.data), k).toBeLessThanOrEqual(1e-5)
  })

  it('ema_update per call: false leaves the codebook and its statistics as they were (no dead codes)', async () => {
    const q = build({ dim: d, codebook_size: K })
    const init = q.init(random.keyFromSeed(18))
    const r = await vqCallOk(backend, q, init, randn([b, n, d], 19), { training: true, opts: () => ({ emaUpdate: false }) })
    for (const k of Object.keys(init.state)) expect(arr(r.state[k]!), k).toEqual(arr(init.state[k]!))
    const frozenEma = build({ dim: d, codebook_size: K, ema_update: false })
    const on = await vqCallOk(backend, frozenEma, init, randn([b, n, d], 19), { training: true, opts: () => ({ emaUpdate: true }) })
    expect(maxDiff(on.state['_codebook.embed']!.data, init.state['_codebook.embed']!.data)).toBeGreaterThan(0)
  })

  it('codebook_transform_fn: per-token codebooks give the distances and codes; the EMA still updates the codebook itself', async () => {
    // no gradient routing, so the training output is the code row itself, not its rotation
    const q = build({ dim: d, codebook_size: K, route_gradients_to_input: false })
    const init = q.init(random.keyFromSeed(20))
    const x = randn([b, n, d], 21)
    // every token sees the codebook scaled by (1 + token index / 10)
    const scale = tensorOf(Array.from({ length: b * n }, (_, i) => 1 + i / 10), [1, b, n, 1, 1])
    const fn = (s: Tensor) => (e: Tensor) => e.expandDims(1).expandDims(1).mul(s)
    const r = await vqCallOk(backend, q, init, x, { training: true, tensors: { s: scale }, opts: (t) => ({ codebookTransformFn: fn(t['s']!) }) })
    const embed = init.state['_codebook.embed']!.data
    for (let t = 0; t < b * n; t++) {
      const sc = 1 + t / 10
      const dists = Array.from({ length: K }, (_, c) => Math.sqrt([0, 1, 2].reduce((s, j) => s + (x.data[t * d + j]! - sc * embed[c * d + j]! + 1e-6) ** 2, 0)))
      for (let c = 0; c < K; c++) close(r.extra['codebook_dist']!.data[t * K + c]!, -dists[c]!)
      const idx = r.indices.data[t]!
      expect(dists[idx]).toBeLessThanOrEqual(Math.min(...dists) + 1e-6)
      for (let j = 0; j < d; j++) close(r.quantized.data[t * d + j]!, sc * embed[idx * d + j]!, 1e-6)
    }
    // the EMA step sums the raw inputs by chosen code into the codebook's own statistics (decay 0.8)
    const cs0 = init.state['_codebook.cluster_size']!.data, ea0 = init.state['_codebook.embed_avg']!.data
    for (let c = 0; c < K; c++) {
      const rowsOf = Array.from({ length: b * n }, (_, t) => t).filter((t) => r.indices.data[t] === c)
      close(r.state['_codebook.cluster_size']!.data[c]!, cs0[c]! + 0.2 * (rowsOf.length - cs0[c]!))
      for (let j = 0; j < d; j++) {
        const sum = rowsOf.reduce((a, t) => a + x.data[t * d + j]!, 0)
        close(r.state['_codebook.embed_avg']!.data[c * d + j]!, ea0[c * d + j]! + 0.2 * (sum - ea0[c * d + j]!))
      }
    }
    const bad = await vqCall(backend, q, init, x, { opts: () => ({ codebookTransformFn: (e: Tensor) => e }) })
    expect(E.isLeft(bad) && bad.left.where).toBe('VectorQuantize.codebookTransformFn')
  })

  it('codebook_transform_fn on a cosine codebook: the transformed codes are l2-normalized, so a positive scale changes nothing', async () => {
    const q = build({ dim: d, codebook_size: K, use_cosine_sim: true })
    const init = q.init(random.keyFromSeed(50))
    const x = randn([b, n, d], 51)
    const scale = tensorOf(Array.from({ length: b * n }, (_, i) => 0.5 + i), [1, b, n, 1, 1])
    const r = await vqCallOk(backend, q, init, x, { tensors: { s: scale }, opts: (t) => ({ codebookTransformFn: (e: Tensor) => e.expandDims(1).expandDims(1).mul(t['s']!) }) })
    const plain = await vqCallOk(backend, q, init, x)
    expect(arr(r.indices)).toEqual(arr(plain.indices))
    expect(maxDiff(r.extra['codebook_dist']!.data, plain.extra['codebook_dist']!.data)).toBeLessThanOrEqual(1e-6)
    expect(maxDiff(r.quantized.data, plain.quantized.data)).toBeLessThanOrEqual(1e-6)
  })

  it('bad topk, indices and EMA arguments are Lefts naming the argument', async () => {
    const q = build({ dim: d, codebook_size: K })
    const init = q.init(random.keyFromSeed(1))
    const x = randn([b, n, d], 2)
    const cases: [string, boolean, Record<string, HostTensor>, (t: Record<string, Tensor>) => object, string][] = [
      ['topk 0', true, {}, () => ({ topk: 0 }), 'VectorQuantize.topk'],
      ['topk above codebook_size', true, {}, () => ({ topk: K + 1 }), 'VectorQuantize.topk'],
      ['topk in eval', false, {}, () => ({ topk: 2 }), 'VectorQuantize.topk'],
      ['float target indices', false, { i: tensorOf(new Float32Array(b * n), [b, n]) }, (t) => ({ indices: t['i'] }), 'VectorQuantize.indices'],
      ['target indices of the wrong shape', false, { i: tensorOf(new Int32Array(b * n), [b * n], 'int32') }, (t) => ({ indices: t['i'] }), 'VectorQuantize.indices'],
      ['weight of the wrong shape', true, { w: tensorOf(new Float32Array(K + 1), [K + 1]) }, (t) => ({ emaUpdateWeight: t['w'] }), 'VectorQuantize.emaUpdateWeight'],
      ['non-finite weight', true, {}, () => ({ emaUpdateWeight: NaN }), 'VectorQuantize.emaUpdateWeight'],
      ['accumulator of the wrong shape', true, { a: tensorOf(new Float32Array(K), [K]) }, (t) => ({ emaAccum: { clusterSize: t['a'], embedSum: t['a'] } }), 'VectorQuantize.emaAccum'],
    ]
    for (const [what, training, tensors, opts, where] of cases) {
      const r = await vqCall(backend, q, init, x, { training, tensors, opts: opts as never })
      expect(E.isLeft(r), what).toBe(true)
      if (E.isLeft(r)) expect(r.left.where, what).toBe(where)
    }
    const heads = build({ dim: 4, codebook_size: K, heads: 2, separate_codebook_per_head: true, codebook_dim: 2 })
    const rh = await vqCall(backend, heads, heads.init(random.keyFromSeed(1)), randn([b, n, 4], 3), { training: true, opts: () => ({ topk: 2 }) })
    expect(E.isLeft(rh) && rh.left.where).toBe('VectorQuantize.topk')
  })
})
