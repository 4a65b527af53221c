import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { vectorQuantize, type VectorQuantize } from '../src/vq/vector-quantize.js'
import { decodeVQ } from '../src/vq/config.js'
import { applyOnHost, indicesToCodesOnHost } from '../src/run.js'
import type { Init } from '../src/quantizer.js'
import { arr, backends, orThrow, randn, snapshot } from './helpers.js'

const build = (o: Record<string, unknown>): VectorQuantize => orThrow(vectorQuantize(o))
const key = (a: number, b = 7) => tensorOf([a, b], [2], 'int32')

async function run(q: VectorQuantize, init: Init, x: HostTensor, training = false, k?: HostTensor) {
  return orThrow(await applyOnHost(q, { params: init.params, state: init.state, x, training, ...(k ? { key: k } : {}) }, backends[0]!))
}

/** x on a 1/64 grid, so distances are exact enough in float32 that ties are the only ambiguity */
const gridInput = (shape: number[], seed: number) => {
  const t = randn(shape, seed)
  return tensorOf(t.data.map((v) => Math.round(v * 64) / 64), shape)
}

describe.each(backends.map((b) => [b.name, b] as const))('VectorQuantize on %s', (_name, backend) => {
  test.prop([fc.integer({ min: 1, max: 1e6 }), fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 6 }), fc.boolean()], { numRuns: 25 })(
    'every output row is a codebook row and no code is nearer (euclidean) or more similar (cosine)',
    async (seed, b, n, cosine) => {
      const d = 4, K = 8
      const q = build({ dim: d, codebook_size: K, use_cosine_sim: cosine })
      const init = q.init(random.keyFromSeed(seed))
      const x = gridInput([b, n, d], seed + 1)
      const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x }, backend))
      const embed = init.state['_codebook.embed']!.data
      for (let t = 0; t < b * n; t++) {
        const xi = Array.from(x.data.subarray(t * d, (t + 1) * d))
        const xn = cosine ? Math.max(Math.hypot(...xi), 1e-6) : 1
        const score = (k: number) => {
          let s = 0
          for (let j = 0; j < d; j++) s += cosine ? (xi[j]! / xn) * embed[k * d + j]! : (xi[j]! - embed[k * d + j]!) ** 2
          return cosine ? s : -s
        }
        const idx = r.indices.data[t]!
        expect(Array.from(r.quantized.data.subarray(t * d, (t + 1) * d))).toEqual(Array.from(embed.subarray(idx * d, (idx + 1) * d)))
        for (let k = 0; k < K; k++) expect(score(k)).toBeLessThanOrEqual(score(idx) + 1e-5)
      }
    },
  )

  it('an EMA training step equals a direct float64 computation of the reference update', async () => {
    const d = 3, K = 5, decay = 0.7, eps = 1e-5
    const q = build({ dim: d, codebook_size: K, decay, eps })
    const init = q.init(random.keyFromSeed(3))
    const x = randn([2, 6, d], 4)
    const r = await run(q, init, x, true)
    const cs0 = arr(init.state['_codebook.cluster_size']!), ea0 = arr(init.state['_codebook.embed_avg']!)
    const w = 1 - decay
    const counts = new Array(K).fill(0), sums = new Array(K * d).fill(0)
    for (let t = 0; t < 12; t++) {
      const k = r.indices.data[t]!
      counts[k]++
      for (let j = 0; j < d; j++) sums[k * d + j] += x.data[t * d + j]!
    }
    const cs = cs0.map((c, k) => c + w * (counts[k] - c))
    const ea = ea0.map((a, i) => a + w * (sums[i] - a))
    const total = cs.reduce((a, b) => a + b, 0)
    const embed = ea.map((a, i) => a / (((cs[Math.floor(i / d)]! + eps) / (total + K * eps)) * total))
    const close = (got: HostTensor, want: number[]) => want.forEach((v, i) => expect(Math.abs(got.data[i]! - v)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(v))))
    close(r.state['_codebook.cluster_size']!, cs)
    close(r.state['_codebook.embed_avg']!, ea)
    close(r.state['_codebook.embed']!, embed)
    // quantized uses the pre-update codebook
    const e0 = init.state['_codebook.embed']!.data
    for (let t = 0; t < 12; t++) {
      const k = r.indices.data[t]!
      for (let j = 0; j < d; j++) expect(Math.abs(r.quantized.data[t * d + j]! - e0[k * d + j]!)).toBeLessThan(1e-5)
    }
  })

  const layouts: [string, Record<string, unknown>, number[], number[]][] = [
    ['(b, n, d)', {}, [2, 5, 8], [2, 5]],
    ['single token (b, d)', {}, [3, 8], [3]],
    ['channel_last false (b, d, n)', { channel_last: false }, [2, 8, 5], [2, 5]],
    ['image (b, c, h, w)', { accept_image_fmap: true }, [2, 8, 3, 4], [2, 3, 4]],
    ['video (b, c, d, h, w)', { accept_3d_fmap: true }, [1, 8, 2, 3, 2], [1, 2, 3, 2]],
    ['separate heads', { heads: 2, separate_codebook_per_head: true, codebook_dim: 4 }, [2, 5, 8], [2, 5, 2]],
    ['separate heads + projection', { heads: 2, separate_codebook_per_head: true, codebook_dim: 3 }, [2, 5, 8], [2, 5, 2]],
    ['shared heads', { heads: 2, codebook_dim: 4 }, [2, 5, 8], [2, 5, 2]],
    ['lower codebook_dim (projections)', { codebook_dim: 3 }, [2, 5, 8], [2, 5]],
    ['image + heads', { accept_image_fmap: true, heads: 4, separate_codebook_per_head: true, codebook_dim: 2 }, [1, 8, 2, 2], [1, 2, 2, 4]],
    ['cosine + heads', { use_cosine_sim: true, heads: 2, separate_codebook_per_head: true, codebook_dim: 4 }, [2, 3, 8], [2, 3, 2]],
  ]
  it.each(layouts)('%s: shapes, indicesToCodes == quantized (eval), state untouched', async (_n, opts, shape, idxShape) => {
    const q = build({ dim: 8, codebook_size: 6, ...opts })
    const init = q.init(random.keyFromSeed(11))
    const before = snapshot(init.state), beforeP = snapshot(init.params)
    const x = randn(shape, 12)
    const r = await run(q, init, x)
    expect(r.quantized.shape).toEqual(shape)
    expect(r.indices.shape).toEqual(idxShape)
    expect(r.indices.dtype).toBe('int32')
    expect(r.loss.data[0]).toBe(0)
    const codes = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, backend, undefined, init.state))
    if (opts['heads'] && !opts['separate_codebook_per_head']) {
      // the reference returns (b, n, heads, codebook_dim) for a shared multi-head codebook
      expect(codes.shape).toEqual([...idxShape, 4])
      expect(arr(codes)).toEqual(arr(r.quantized))
    } else {
      expect(codes.shape).toEqual(shape)
      expect(arr(codes)).toEqual(arr(r.quantized))
    }
    expect(snapshot(init.state)).toEqual(before)
    expect(snapshot(init.params)).toEqual(beforeP)
  })

  it('training: state is a new value, inputs untouched; frozen training leaves the state equal', async () => {
    const q = build({ dim: 4, codebook_size: 8, threshold_ema_dead_code: 0.5 })
    const init = q.init(random.keyFromSeed(1))
    const before = snapshot(init.state)
    const x = randn([2, 4, 4], 2)
    const r = await run(q, init, x, true, key(5))
    expect(snapshot(init.state)).toEqual(before)
    expect(snapshot(r.state)).not.toEqual(before)
    const frozen = build({ dim: 4, codebook_size: 8, freeze_codebook: true })
    const rf = await run(frozen, init, x, true)
    expect(snapshot(rf.state)).toEqual(before)
    expect(rf.losses['commitment']!.data[0]).toBeGreaterThan(0)
    expect(rf.loss.data[0]).toBeCloseTo(rf.losses['commitment']!.data[0]!, 6)
  })

  it('dead-code revival: expired codes become distinct batch rows with cluster size = threshold', async () => {
    const q = build({ dim: 3, codebook_size: 4, threshold_ema_dead_code: 100, decay: 0.99 })
    const init = q.init(random.keyFromSeed(8))
    const x = randn([1, 6, 3], 9)
    const r1 = await run(q, init, x, true, key(1))
    const r2 = await run(q, init, x, true, key(2))
    const rows = new Set(Array.from({ length: 6 }, (_, t) => arr(x).slice(t * 3, t * 3 + 3).join(',')))
    const picked = Array.from({ length: 4 }, (_, k) => arr(r1.state['_codebook.embed']!).slice(k * 3, k * 3 + 3).join(','))
    picked.forEach((p) => expect(rows.has(p)).toBe(true))
    expect(new Set(picked).size).toBe(4)
    expect(arr(r1.state['_codebook.cluster_size']!)).toEqual([100, 100, 100, 100])
    arr(r1.state['_codebook.embed_avg']!).forEach((v, i) => expect(v).toBeCloseTo(Math.fround(r1.state['_codebook.embed']!.data[i]! * 100), 3))
    expect(arr(r1.state['_codebook.embed']!)).not.toEqual(arr(r2.state['_codebook.embed']!)) // the key decides
    const again = await run(q, init, x, true, key(1))
    expect(arr(again.state['_codebook.embed']!)).toEqual(arr(r1.state['_codebook.embed']!))
    // without a key the call is refused with a clear error
    const nokey = await applyOnHost(q, { params: init.params, state: init.state, x, training: true }, backend)
    expect(E.isLeft(nokey) && nokey.left.message).toMatch(/threshold_ema_dead_code.*key/)
  })

  it('k-means init runs on the first batch (any mode), sets initted, and is a no-op afterwards', async () => {
    const q = build({ dim: 2, codebook_size: 3, kmeans_init: true, kmeans_iters: 5 })
    const init = q.init(random.keyFromSeed(2))
    expect(init.state['_codebook.initted']!.data[0]).toBe(0)
    // three well separated clusters
    const pts = [0, 0, 0.1, 0, 0, 0.1, 5, 5, 5.1, 5, 5, 5.1, -5, 5, -5.1, 5, -5, 5.1]
    const x = tensorOf(pts, [1, 9, 2])
    // every draw ends at a Lloyd fixed point: each used code is (up to Laplace smoothing) the mean of its rows
    for (const k of [0, 1, 2, 3]) {
      const rk = await run(q, init, x, false, key(k))
      const ek = arr(rk.state['_codebook.embed']!), ik = arr(rk.indices)
      for (let c = 0; c < 3; c++) {
        const mine = ik.flatMap((v, t) => (v === c ? [t] : []))
        if (mine.length === 0) continue
        for (let j = 0; j < 2; j++) expect(ek[c * 2 + j]!).toBeCloseTo(mine.reduce((a, t) => a + pts[t * 2 + j]!, 0) / mine.length, 3)
      }
    }
    const r = await run(q, init, x, false, key(4))
    expect(r.state['_codebook.initted']!.data[0]).toBe(1)
    const idx = arr(r.indices)
    expect(new Set([idx[0], idx[1], idx[2]]).size).toBe(1)
    expect(new Set([idx[0], idx[3], idx[6]]).size).toBe(3)
    const e = arr(r.state['_codebook.embed']!)
    const c = idx[3]!
    expect(e[c * 2]!).toBeCloseTo(5.0333, 3)
    const r2 = await run(q, { params: init.params, state: r.state }, x, false, key(99))
    expect(arr(r2.state['_codebook.embed']!)).toEqual(e)
  })

  it('orthogonal regularization equals a direct computation (all codes, active codes only)', async () => {
    const d = 3, K = 5
    for (const active of [false, true]) {
      const q = build({ dim: d, codebook_size: K, orthogonal_reg_weight: 2, orthogonal_reg_active_codes_only: active, freeze_codebook: true, commitment_weight: 0 })
      const init = q.init(random.keyFromSeed(4))
      const x = randn([1, 3, d], 5)
      const r = await run(q, init, x, true)
      const e = arr(init.state['_codebook.embed']!)
      const codes = active ? [...new Set(arr(r.indices))].sort() : [...Array(K).keys()]
      const nrm = (k: number) => e.slice(k * d, k * d + d).map((v, _i, a) => v / Math.hypot(...a))
      let s = 0
      for (const i of codes) for (const j of codes) s += nrm(i).reduce((a, v, t) => a + v * nrm(j)[t]!, 0) ** 2
      const n = codes.length
      const want = s / (n * n) - 1 / n
      expect(r.losses['orthogonal_reg']!.data[0]).toBeCloseTo(want, 5)
      expect(r.loss.data[0]).toBeCloseTo(2 * want, 5)
    }
  })

  it('rotation trick and straight-through keep the forward value (training)', async () => {
    for (const o of [{ rotation_trick: true }, { rotation_trick: false }]) {
      const q = build({ dim: 6, codebook_size: 8, freeze_codebook: true, ...o })
      const init = q.init(random.keyFromSeed(6))
      const x = randn([2, 4, 6], 7)
      const ev = await run(q, init, x)
      const tr = await run(q, init, x, true)
      expect(arr(tr.indices)).toEqual(arr(ev.indices))
      arr(tr.quantized).forEach((v, i) => expect(Math.abs(v - ev.quantized.data[i]!)).toBeLessThan(1e-5))
    }
  })

  it('stochastic sampling: keyed, reproducible, near-argmax at low temperature, varied at high', async () => {
    const base = { dim: 4, codebook_size: 16, stochastic_sample_codes: true, freeze_codebook: true }
    const x = randn([2, 32, 4], 3)
    const cold = build({ ...base, sample_codebook_temp: 1e-6 })
    const init = cold.init(random.keyFromSeed(5))
    const ev = await run(cold, init, x)
    const c = await run(cold, init, x, true, key(1))
    expect(arr(c.indices)).toEqual(arr(ev.indices))
    const hot = build({ ...base, sample_codebook_temp: 100 })
    const h1 = await run(hot, init, x, true, key(1)), h1b = await run(hot, init, x, true, key(1)), h2 = await run(hot, init, x, true, key(2))
    expect(arr(h1.indices)).toEqual(arr(h1b.indices))
    expect(arr(h1.indices)).not.toEqual(arr(h2.indices))
    expect(arr(h1.indices)).not.toEqual(arr(ev.indices))
  })

  it('learnable codebook: embed is a parameter, commitment is the (undetached) codebook loss, no EMA', async () => {
    const q = build({ dim: 4, codebook_size: 8, learnable_codebook: true, ema_update: false })
    expect(q.embedInParams).toBe(true)
    const init = q.init(random.keyFromSeed(1))
    expect(init.params['_codebook.embed']).toBeDefined()
    expect(init.state['_codebook.embed']).toBeUndefined()
    const r = await run(q, init, randn([2, 3, 4], 2), true)
    expect(snapshot(r.state)).toEqual(snapshot(init.state))
    expect(r.losses['commitment']!.data[0]).toBeGreaterThan(0)
  })
})

describe('VectorQuantize config', () => {
  const valid = fc.record(
    {
      codebook_size: fc.integer({ min: 1, max: 12 }),
      heads: fc.integer({ min: 1, max: 3 }),
      separate_codebook_per_head: fc.boolean(),
      codebook_dim: fc.integer({ min: 1, max: 4 }),
      use_cosine_sim: fc.boolean(),
      decay: fc.double({ min: 0, max: 1, noNaN: true }),
      threshold_ema_dead_code: fc.constantFrom(0, 1, 2),
      commitment_weight: fc.constantFrom(0, 0.25, 1),
      orthogonal_reg_weight: fc.constantFrom(0, 0.5),
      kmeans_init: fc.boolean(),
      rotation_trick: fc.boolean(),
      channel_last: fc.boolean(),
    },
    { requiredKeys: ['codebook_size'] },
  )
  test.prop([valid, fc.integer({ min: 1, max: 6 }), fc.boolean(), fc.integer({ min: 0, max: 1000 })], { numRuns: 40 })(
    'every valid config builds, traces and runs (eval and train)',
    async (o, dim, training, seed) => {
      const q = build({ dim, ...o })
      const init = q.init(random.keyFromSeed(seed))
      const shape = o.channel_last === false ? [2, dim, 3] : [2, 3, dim]
      const r = await run(q, init, randn(shape, seed), training, key(seed))
      expect(r.quantized.shape).toEqual(shape)
      expect(arr(r.quantized).every(Number.isFinite)).toBe(true)
      expect(Object.keys(r.state).sort()).toEqual(Object.keys(init.state).sort())
    },
  )

  it.each([
    [{ dim: 4, codebook_size: 0 }, 'VectorQuantize.codebook_size', /PositiveInt/],
    [{ dim: 4 }, 'VectorQuantize.codebook_size', /.+/],
    [{ dim: 4, codebook_size: 8, decay: 2 }, 'VectorQuantize.decay', /\[0, 1\]/],
    [{ dim: 4, codebook_size: 8, straight_through: true }, 'VectorQuantize.straight_through', /rotation_trick/],
    [{ dim: 4, codebook_size: 8, learnable_codebook: true }, 'VectorQuantize.ema_update', /learnable/],
    [{ dim: 4, codebook_size: 8, use_cosine_sim: true, learnable_codebook: true, ema_update: false }, 'VectorQuantize.learnable_codebook', /cosine/],
    [{ dim: 4, codebook_size: 8, affine_param: true, use_cosine_sim: true }, 'VectorQuantize.affine_param', /euclidean/],
    [{ dim: 4, codebook_size: 8, heads: 2, separate_codebook_per_head: true, orthogonal_reg_active_codes_only: true }, 'VectorQuantize.orthogonal_reg_active_codes_only', /separate/],
    [{ dim: 4.5, codebook_size: 8 }, 'VectorQuantize.dim', /PositiveInt/],
  ])('refuses %j at %s', (input, where, msg) => {
    const r = decodeVQ(input)
    if (E.isRight(r)) throw new Error('expected a Left')
    expect(r.left.kind).toBe('config')
    expect(r.left.where).toBe(where)
    expect(r.left.message).toMatch(msg)
  })

  it('a wrong input shape is an error naming the expected and actual shape', async () => {
    const q = build({ dim: 4, codebook_size: 8 })
    const init = q.init(random.keyFromSeed(1))
    const r = await applyOnHost(q, { params: init.params, state: init.state, x: randn([2, 3, 5], 1) }, backends[0]!)
    expect(E.isLeft(r) && r.left.message).toMatch(/last dimension 5; expected dim 4/)
    const r2 = await applyOnHost(q, { params: init.params, state: init.state, x: randn([2, 3, 4, 4], 1) }, backends[0]!)
    expect(E.isLeft(r2) && r2.left.message).toMatch(/\(b, n, d\)/)
  })
})
