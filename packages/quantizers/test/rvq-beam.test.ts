import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random, scoped, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import type { RVQApplyOptions, ResidualVQ } from '../src/residual-vq/residual-vq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { groupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import { searchPaths } from '../src/residual-vq/path-search.js'
import type { Init, Named } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import { arr, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { comparedLanes } from './zoo.js'
import { tolerance } from './matrix-common.js'
import { expectNear, gradRun, rotationGrad } from './grad-helpers.js'

/**
 * ResidualVQ beam search (beam_size, eval_beam_size, beam_score_quantizer_weights). A float64 host
 * transcription of the reference's algorithm checks a batch-1 training step (the one case the
 * reference itself runs): indices, output, per-layer losses and the layer-0-only EMA update. Batch
 * > 1 and eval, where the reference crashes, are checked by properties of the generalisation.
 */

const reference = cpuBackend()
const key = (a: number) => tensorOf([a, 5], [2], 'int32')

interface Out {
  quantized: HostTensor
  indices: HostTensor
  loss: HostTensor
  all_losses: HostTensor
  state: Record<string, HostTensor>
}

async function call(backend: Backend, q: ResidualVQ, init: Init, x: HostTensor, opts: RVQApplyOptions, k?: HostTensor): Promise<Out> {
  const r = await runOnHost(backend, [init.params, init.state, x, ...(k ? [k] : [])] as const, (p, s, xs, kk) => {
    const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { ...opts, ...(kk ? { key: kk as Tensor } : {}) })
    return { quantized: res.quantized, indices: res.indices, loss: res.loss, all_losses: res.extra!['all_losses']!, state: { ...res.state } }
  })
  return orThrow(r) as unknown as Out
}

const rowsOf = (t: ArrayLike<number>, d: number) => Array.from({ length: t.length / d }, (_, r) => Array.from(t).slice(r * d, r * d + d))
const mse = (a: readonly number[], b: readonly number[]) => a.reduce((s, v, i) => s + (v - b[i]!) ** 2, 0) / a.length

interface HostPath {
  score: number
  res: number[]
  out: number[]
  idx: number[]
  losses: number[]
}

/** The reference's beam search for one token, in float64 (euclidean codebooks, commitment loss only). */
function hostBeam(x: number[], codebooks: number[][][], k: number, weights: readonly number[]): HostPath {
  let paths: HostPath[] = [{ score: 0, res: x, out: x.map(() => 0), idx: [], losses: [] }]
  codebooks.forEach((cb, l) => {
    const cands: HostPath[] = []
    for (const p of paths) {
      const order = cb.map((e, c) => ({ c, d: mse(e, p.res) })).sort((a, b) => a.d - b.d || a.c - b.c).slice(0, k)
      for (const { c } of order) {
        const e = cb[c]!
        const loss = mse(e, p.res)
        cands.push({ score: p.score - loss * weights[l]!, res: p.res.map((v, i) => v - e[i]!), out: p.out.map((v, i) => v + e[i]!), idx: [...p.idx, c], losses: [...p.losses, loss] })
      }
    }
    paths = cands.length > k ? [...cands].sort((a, b) => b.score - a.score).slice(0, k) : cands
  })
  return paths.reduce((best, p) => (p.score > best.score ? p : best))
}

const codebooksOf = (q: ResidualVQ, init: Init) =>
  q.config.codebook_sizes.map((K, l) => rowsOf(init.state[`layers.${l}._codebook.embed`]!.data, q.config.codebook_dim).slice(0, K))

describe('ResidualVQ beam search against the reference algorithm (batch 1, training)', () => {
  for (const [seed, nq, K, k, weights] of [
    [1, 3, 8, 3, [1, 1, 1]],
    [2, 4, 6, 2, [1, 0.5, 2, 1]],
    [3, 2, 5, 5, [1, 1]],
    [4, 3, 16, 4, [0, 0, 1]],
  ] as const)
    it(`seed ${seed}: ${nq} layers of ${K} codes, beam ${k}, weights ${weights.join(',')}`, async () => {
      const d = 4, n = 6
      const q = orThrow(residualVQ({ dim: d, num_quantizers: nq, codebook_size: K, beam_size: k, beam_score_quantizer_weights: [...weights], decay: 0.5 }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([1, n, d], 100 + seed)
      const got = await call(reference, q, init, x, { training: true })
      const cbs = codebooksOf(q, init)
      const want = rowsOf(x.data, d).map((t) => hostBeam(t, cbs, k, weights))
      expect(arr(got.indices)).toEqual(want.flatMap((p) => p.idx))
      arr(got.quantized).forEach((v, i) => expect(v).toBeCloseTo(want[Math.floor(i / d)]!.out[i % d]!, 5))
      // all_losses: the chosen paths' layer losses averaged over tokens
      for (let l = 0; l < nq; l++) expect(got.all_losses.data[l]!).toBeCloseTo(want.reduce((s, p) => s + p.losses[l]!, 0) / n, 5)
      // only layer 0 takes the batch into its EMA (the reference's update loop stops after its first layer)
      const cs0 = init.state['layers.0._codebook.cluster_size']!.data
      const counts = new Array(K).fill(0)
      for (const p of want) counts[p.idx[0]!]++
      arr(got.state['layers.0._codebook.cluster_size']!).forEach((v, c) => expect(v).toBeCloseTo(cs0[c]! * 0.5 + counts[c] * 0.5, 5))
      for (let l = 1; l < nq; l++)
        for (const name of ['cluster_size', 'embed_avg', 'embed'])
          expect(arr(got.state[`layers.${l}._codebook.${name}`]!)).toEqual(arr(init.state[`layers.${l}._codebook.${name}`]!))
    })
})

/** Each token's path score: minus its layers' squared errors, weighted (the search's objective). */
function pathError(x: number[], cbs: number[][][], idx: number[], weights: readonly number[]): number {
  let res = x, total = 0
  idx.forEach((c, l) => {
    const e = cbs[l]![c]!
    total += mse(e, res) * weights[l]!
    res = res.map((v, i) => v - e[i]!)
  })
  return total
}

describe('ResidualVQ beam search: properties of the generalisation (batch > 1, eval)', () => {
  test.prop([fc.integer({ min: 1, max: 3 }), fc.integer({ min: 2, max: 4 }), fc.boolean(), fc.integer({ min: 0, max: 999 })], { numRuns: 12 })(
    'beam width 1 is the greedy residual loop (indices, output, losses)',
    async (nq, b, training, seed) => {
      const q = orThrow(residualVQ({ dim: 4, num_quantizers: nq, codebook_size: 6, decay: 0.5 }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([b, 5, 4], seed + 1)
      const greedy = await call(reference, q, init, x, { training })
      const r = await runOnHost(reference, [init.params, init.state, x] as const, (p, s, xs) => {
        const z = (xs as Tensor).reshape([b * 5, 4])
        const out = searchPaths({ cfg: q.config, width: 1, beam: true, where: 'test' }, p as Named<Tensor>, s as Named<Tensor>, z, [b, 5], { training })
        return { quantized: out.quantized, indices: out.indices, all_losses: out.allLosses }
      })
      const one = orThrow(r)
      expect(arr(one.indices)).toEqual(arr(greedy.indices))
      arr(one.quantized).forEach((v, i) => expect(v).toBeCloseTo(greedy.quantized.data[i]!, 5))
      arr(one.all_losses).forEach((v, i) => expect(v).toBeCloseTo(greedy.all_losses.data[i]!, 5))
    },
  )

  test.prop([fc.integer({ min: 2, max: 4 }), fc.integer({ min: 2, max: 6 }), fc.boolean(), fc.integer({ min: 0, max: 999 })], { numRuns: 12 })(
    'two layers: the chosen path is never worse than greedy, per token, in eval and training, any batch',
    async (k, b, training, seed) => {
      const K = 6, d = 3, weights = [1, 1]
      const q = orThrow(residualVQ({ dim: d, num_quantizers: 2, codebook_size: K, beam_size: k }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([b, 4, d], seed + 7)
      const beam = await call(reference, q, init, x, { training })
      const greedy = await call(reference, q, init, x, { training, beamSize: 1 })
      const cbs = codebooksOf(q, init)
      rowsOf(x.data, d).forEach((t, i) => {
        const eb = pathError(t, cbs, arr(beam.indices).slice(2 * i, 2 * i + 2), weights)
        const eg = pathError(t, cbs, arr(greedy.indices).slice(2 * i, 2 * i + 2), weights)
        expect(eb).toBeLessThanOrEqual(eg + 1e-6)
      })
    },
  )

  it('a beam as wide as the codebook over two layers is the exhaustive search', async () => {
    const K = 5, d = 3
    const q = orThrow(residualVQ({ dim: d, num_quantizers: 2, codebook_size: K, eval_beam_size: K, beam_size: 2 }))
    const init = q.init(random.keyFromSeed(3))
    const x = randn([3, 7, d], 11)
    const got = await call(reference, q, init, x, { training: false })
    const cbs = codebooksOf(q, init)
    rowsOf(x.data, d).forEach((t, i) => {
      let best = Infinity
      for (let a = 0; a < K; a++) for (let c = 0; c < K; c++) best = Math.min(best, pathError(t, cbs, [a, c], [1, 1]))
      expect(pathError(t, cbs, arr(got.indices).slice(2 * i, 2 * i + 2), [1, 1])).toBeCloseTo(best, 6)
    })
  })

  test.prop([fc.integer({ min: 2, max: 4 }), fc.boolean(), fc.integer({ min: 0, max: 999 })], { numRuns: 8 })(
    'tokens are searched independently: a batch gives what each sequence gives alone',
    async (b, training, seed) => {
      const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 8, beam_size: 3, ema_update: false }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([b, 4, 4], seed + 3)
      const all = await call(reference, q, init, x, { training })
      for (let i = 0; i < b; i++) {
        const xi = tensorOf(x.data.slice(i * 16, i * 16 + 16), [1, 4, 4])
        const one = await call(reference, q, init, xi, { training })
        expect(arr(one.indices)).toEqual(arr(all.indices).slice(i * 12, i * 12 + 12))
      }
    },
  )

  it('eval: beam search runs (the reference crashes), losses are 0 and the state is unchanged', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 8, beam_size: 3 }))
    const init = q.init(random.keyFromSeed(9))
    const r = await call(reference, q, init, randn([2, 5, 4], 9), { training: false })
    expect(r.indices.shape).toEqual([2, 5, 3])
    expect(arr(r.all_losses)).toEqual([0, 0, 0])
    for (const [name, t] of Object.entries(init.state)) expect(arr(r.state[name]!), name).toEqual(arr(t))
  })

  it('eval_beam_size is the eval width, beam_size the training one; a per-call beamSize overrides both', async () => {
    const q = orThrow(residualVQ({ dim: 2, num_quantizers: 3, codebook_size: 4, beam_size: 4, eval_beam_size: 1 }))
    const init = q.init(random.keyFromSeed(2))
    const x = randn([4, 16, 2], 5)
    const evalDefault = await call(reference, q, init, x, { training: false })
    const evalGreedy = await call(reference, q, init, x, { training: false, beamSize: 1 })
    const evalBeam = await call(reference, q, init, x, { training: false, beamSize: 4 })
    expect(arr(evalDefault.indices)).toEqual(arr(evalGreedy.indices))
    // over 64 tokens the wide search finds a better path for some
    expect(arr(evalBeam.indices)).not.toEqual(arr(evalGreedy.indices))
    const bad = await runOnHost(reference, [init.params, init.state, x] as const, (p, s, xs) =>
      q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training: false, beamSize: 5 }).indices,
    )
    expect(E.isLeft(bad) && bad.left.where).toBe('ResidualVQ.beamSize')
  })

  it('quantize dropout: dropped layers give -1, keep their state (no k-means init), and the search ignores them', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 8, beam_size: 2, kmeans_init: true, kmeans_iters: 2, quantize_dropout: true }))
    const init = q.init(random.keyFromSeed(12))
    const x = randn([2, 6, 4], 12)
    const seen = new Set<number>()
    for (let s = 0; s < 10; s++) {
      const r = await call(reference, q, init, x, { training: true }, key(s))
      const idx = arr(r.indices)
      const active = idx.slice(0, 3).filter((v) => v !== -1).length
      seen.add(active)
      for (let t = 0; t < 12; t++) expect(idx.slice(t * 3, t * 3 + 3).map((v) => v === -1)).toEqual([0, 1, 2].map((l) => l >= active))
      for (let l = 0; l < 3; l++) expect(r.state[`layers.${l}._codebook.initted`]!.data[0], `layer ${l} of ${active}`).toBe(l < active ? 1 : 0)
      arr(r.all_losses).forEach((v, l) => (l >= active ? expect(v).toBe(0) : expect(v).toBeGreaterThan(0)))
    }
    expect(seen.size).toBeGreaterThan(1)
  })

  it('shared codebook: one EMA step with the chosen layer-0 codes, then embed recomputed once (the reference after its search)', async () => {
    const K = 8, d = 4
    const q = orThrow(residualVQ({ dim: d, num_quantizers: 3, codebook_size: K, beam_size: 3, shared_codebook: true, decay: 0.5 }))
    const init = q.init(random.keyFromSeed(14))
    const r = await call(reference, q, init, randn([1, 6, d], 14), { training: true })
    const counts = new Array(K).fill(0)
    arr(r.indices).forEach((c, i) => i % 3 === 0 && counts[c]++)
    const cs0 = init.state['layers.0._codebook.cluster_size']!.data
    const cs = counts.map((c, k) => cs0[k]! * 0.5 + c * 0.5)
    arr(r.state['layers.0._codebook.cluster_size']!).forEach((v, k) => expect(v).toBeCloseTo(cs[k]!, 5))
    const total = cs.reduce((a, b) => a + b, 0)
    const avg = r.state['layers.0._codebook.embed_avg']!.data
    arr(r.state['layers.0._codebook.embed']!).forEach((v, i) => {
      const k = Math.floor(i / d)
      expect(v).toBeCloseTo(avg[i]! / (((cs[k]! + 1e-5) / (total + K * 1e-5)) * total), 4)
    })
  })

  it('shared codebook, k-means init, dead codes, quantize dropout and cosine run under beam search', async () => {
    const q = orThrow(
      residualVQ({ dim: 4, num_quantizers: 4, codebook_size: 8, beam_size: 3, shared_codebook: true, kmeans_init: true, kmeans_iters: 2, threshold_ema_dead_code: 1, quantize_dropout: true }),
    )
    const init = q.init(random.keyFromSeed(4))
    const x = randn([2, 6, 4], 4)
    const r = await call(reference, q, init, x, { training: true }, key(1))
    expect(r.state['layers.0._codebook.initted']!.data[0]).toBe(1)
    expect(arr(r.quantized).every(Number.isFinite)).toBe(true)
    const cos = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 8, beam_size: 2, use_cosine_sim: true }))
    const rc = await call(reference, cos, cos.init(random.keyFromSeed(1)), x, { training: true })
    expect(rc.indices.shape).toEqual([2, 6, 2])
  })
})

describe('ResidualVQ beam search gradients', () => {
  it("d(w·quantized)/dx is the rotation trick's gradient summed over the chosen path's layers", async () => {
    const d = 4, nq = 3
    const q = orThrow(residualVQ({ dim: d, num_quantizers: nq, codebook_size: 8, beam_size: 3 }))
    const init = q.init(random.keyFromSeed(17))
    const x = randn([2, 3, d], 17)
    const w = randn([2, 3, d], 18)
    const g = await gradRun(reference, q, init, x, w, { training: true })
    const cbs = codebooksOf(q, init)
    const want = rowsOf(x.data, d).flatMap((t, i) => {
      const idx = arr(g.indices).slice(i * nq, i * nq + nq)
      const wi = Array.from(w.data.slice(i * d, i * d + d))
      let res = t
      const total = t.map(() => 0)
      idx.forEach((c, l) => {
        const e = cbs[l]![c]!
        rotationGrad(res, e, wi).forEach((v, j) => (total[j] += v))
        res = res.map((v, j) => v - e[j]!)
      })
      return total
    })
    expectNear(g.gx.data, want, 1e-4, 'dx')
  })
})

describe('GroupedResidualVQ with beam search', () => {
  it("each group searches as its own ResidualVQ (the reference passes beam options to every group's ResidualVQ)", async () => {
    const opts = { num_quantizers: 3, codebook_size: 6, beam_size: 3, eval_beam_size: 2 }
    const g = orThrow(groupedResidualVQ({ dim: 4, groups: 2, ...opts }))
    const single = orThrow(residualVQ({ dim: 2, ...opts }))
    const init = g.init(random.keyFromSeed(13))
    const x = randn([2, 5, 4], 13)
    for (const training of [false, true]) {
      const r = orThrow(await runOnHost(reference, [init.params, init.state, x] as const, (p, s, xs) => {
        const res = g.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training })
        return { indices: res.indices }
      }))
      for (let gi = 0; gi < 2; gi++) {
        const sub = { params: scoped(init.params, `rvqs.${gi}.`), state: scoped(init.state, `rvqs.${gi}.`) }
        const xs = tensorOf(Array.from({ length: 10 }, (_, t) => arr(x).slice(t * 4 + gi * 2, t * 4 + gi * 2 + 2)).flat(), [2, 5, 2])
        const one = await call(reference, single, sub, xs, { training })
        expect(arr(r.indices).slice(gi * 30, gi * 30 + 30)).toEqual(arr(one.indices))
      }
    }
  })
})

describe('ResidualVQ return_all_codes', () => {
  it('extra.all_codes: (q, b, h, w, d) for images, before project_out, from the codebooks the training step left', async () => {
    const q = orThrow(residualVQ({ dim: 4, codebook_dim: 3, num_quantizers: 2, codebook_size: 6, accept_image_fmap: true, decay: 0.5 }))
    const init = q.init(random.keyFromSeed(6))
    const x = randn([2, 4, 3, 2], 6)
    const r = orThrow(await runOnHost(reference, [init.params, init.state, x] as const, (p, s, xs) => {
      const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training: true, returnAllCodes: true })
      return { all: res.extra!['all_codes']!, indices: res.indices, state: { ...res.state } }
    }))
    expect(r.all.shape).toEqual([2, 2, 3, 2, 3])
    // layer l's codes are rows of its updated codebook picked by the indices
    const idx = arr(r.indices)
    for (let l = 0; l < 2; l++) {
      const embed = r.state[`layers.${l}._codebook.embed`]!.data
      for (let t = 0; t < 12; t++)
        for (let j = 0; j < 3; j++) expect(r.all.data[l * 36 + t * 3 + j]).toBe(embed[idx[t * 2 + l]! * 3 + j])
    }
    // without the option there is no all_codes
    const plain = orThrow(await runOnHost(reference, [init.params, init.state, x] as const, (p, s, xs) => ({ ...q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training: false }).extra })))
    expect(Object.keys(plain)).not.toContain('all_codes')
  })
})

const lanes = comparedLanes

const laneConfigs = {
  'EMA and dead codes': { decay: 0.5, threshold_ema_dead_code: 0.5 },
  'cosine, Gumbel sampling, diversity and orthogonal terms': { use_cosine_sim: true, stochastic_sample_codes: true, sample_codebook_temp: 0.5, codebook_diversity_loss_weight: 0.1, orthogonal_reg_weight: 0.1, orthogonal_reg_active_codes_only: true },
}

describeLanes('rvq-beam', lanes, (lane) => `ResidualVQ beam search on ${lane.name}`, (backend) => {
  for (const [label, extra] of Object.entries(laneConfigs))
    for (const training of [false, true])
      it(`${label}, ${training ? 'training' : 'eval'}: indices exact, output and state within the backend's tolerance`, async () => {
        const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 8, beam_size: 3, ...extra }))
        const init = q.init(random.keyFromSeed(21))
        const x = randn([2, 5, 4], 22)
        const want = await call(reference, q, init, x, { training }, key(3))
        const got = await call(backend, q, init, x, { training }, key(3))
        expect(arr(got.indices)).toEqual(arr(want.indices))
        const tol = (w: number) => tolerance(backend.caps, w)
        arr(got.quantized).forEach((v, i) => expect(Math.abs(v - want.quantized.data[i]!)).toBeLessThanOrEqual(tol(want.quantized.data[i]!)))
        for (const [name, t] of Object.entries(want.state))
          arr(got.state[name]!).forEach((v, i) => expect(Math.abs(v - t.data[i]!), name).toBeLessThanOrEqual(tol(t.data[i]!)))
      })
})
