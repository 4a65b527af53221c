import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { random, valueAndGrad } from '@tessera/core'
import { decodeFSP } from '../src/fsp/config.js'
import { makeFSP } from '../src/fsp/fsp.js'
import type { Named } from '../src/quantizer.js'
import { applyOnHost } from '../src/run.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn, runOnHost, snapshot } from './helpers.js'
import { erfHost } from './special-host.js'

const acts = ['tanh', 'sigmoid', 'normal', 'laplace', 'cauchy'] as const
const act = (name: (typeof acts)[number], z: number): number => {
  switch (name) {
    case 'tanh': return (Math.tanh(z) + 1) / 2
    case 'sigmoid': return 1 / (1 + Math.exp(-z))
    case 'normal': return (1 + erfHost(z / Math.SQRT2)) / 2
    case 'laplace': return 0.5 * (1 + Math.sign(z) * (1 - Math.exp(-Math.abs(z))))
    case 'cauchy': return Math.atan(z) / Math.PI + 0.5
  }
}

const optionsArb = fc.record({
  levels: fc.array(fc.integer({ min: 2, max: 8 }), { minLength: 1, maxLength: 4 }),
  act: fc.constantFrom(...acts),
  inv: fc.boolean(),
  extraDim: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
  channelFirst: fc.boolean(),
  norm: fc.constantFrom('none', 'var', 'kurt', 'var_tanh', 'var_sigmoid', 'var_laplace'),
})
type Opts = typeof optionsArb extends fc.Arbitrary<infer T> ? T : never

const build = (o: Opts, extra: Record<string, unknown> = {}) =>
  makeFSP(orThrow(decodeFSP({ levels: o.levels, act_name: o.act, need_inv_act: o.inv, channel_first: o.channelFirst, vector_norm: o.norm, ...(o.extraDim ? { dim: o.extraDim } : {}), ...extra })))

describe.each(backends.map((b) => [b.name, b] as const))('FSP on %s', (_name, backend) => {
  test.prop([optionsArb, fc.integer({ min: 1, max: 2 }), fc.nat(1000)], { numRuns: 40 })(
    'shapes in every layout; levels are floor(act(z) L); indices are their mixed-radix number; indicesToCodes(indices) == quantized in eval',
    async (o, b, seed) => {
      const q = build(o)
      const d = o.levels.length
      const init = q.init(random.keyFromSeed(seed))
      const shape = o.channelFirst ? [b, q.config.dim, 2, 3] : [b, 5, q.config.dim]
      const x = randn(shape, seed, 2)
      const before = { p: snapshot(init.params), s: snapshot(init.state) }
      const r = await applyQ(backend, q, init, x)
      expect(r.quantized.shape).toEqual(x.shape)
      const lead = o.channelFirst ? [b, 2, 3] : [b, 5]
      expect(r.indices.shape).toEqual(lead)
      expect(r.indices.dtype).toBe('int32')
      const z = arr(r.extra['projected']!)
      const lv = arr(r.extra['level_indices']!)
      expect(r.extra['level_indices']!.shape).toEqual([...lead, d])
      const idx = arr(r.indices)
      idx.forEach((k, t) => {
        expect(k >= 0 && k < q.config.codebook_size).toBe(true)
        let radix = 1, sum = 0
        for (let i = 0; i < d; i++) {
          const L = o.levels[i]!, v = lv[t * d + i]!
          const a = act(o.act, z[t * d + i]!)
          // away from a bin boundary the level is floor(a L), clamped below L
          if (Math.abs(a * L - Math.round(a * L)) > 1e-4) expect(v).toBe(Math.min(Math.floor(a * L), L - 1))
          sum += v * radix
          radix *= L
        }
        expect(k).toBe(sum)
      })
      expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-5)
      const levels = orThrow(await runOnHost(backend, [r.indices] as const, (i) => q.indicesToLevelIndices(i as Tensor)))
      expect(arr(levels)).toEqual(lv)
      expect({ p: snapshot(init.params), s: snapshot(init.state) }).toEqual(before)
    },
  )

  test.prop([optionsArb, fc.nat(1000)], { numRuns: 25 })('the norm loss and statistics are the reference VectorNorm of the projected values, in eval too', async (o, seed) => {
    const q = build({ ...o, channelFirst: false })
    const init = q.init(random.keyFromSeed(seed))
    const r = await applyQ(backend, q, init, randn([2, 6, q.config.dim], seed))
    const d = o.levels.length
    const z = arr(r.extra['projected']!)
    const N = z.length / d
    const c = q.config.norm
    let loss = 0
    const stats = { mean: [] as number[], variance: [] as number[], skewness: [] as number[], kurtosis: [] as number[] }
    for (let i = 0; i < d; i++) {
      const col = Array.from({ length: N }, (_, t) => z[t * d + i]!)
      const m = col.reduce((s, v) => s + v, 0) / N
      const v = col.reduce((s, u) => s + (u - m) ** 2, 0) / (N - 1)
      const sd = Math.max(Math.sqrt(v), c.eps)
      stats.mean.push(m)
      stats.variance.push(v)
      stats.skewness.push(col.reduce((s, u) => s + ((u - m) / sd) ** 3, 0) / N)
      stats.kurtosis.push(col.reduce((s, u) => s + ((u - m) / sd) ** 4, 0) / N - 3)
    }
    const term = (vs: number[], target: number, w: number) => (vs.reduce((s, v) => s + (v - target) ** 2, 0) / d) * w
    loss = term(stats.mean, c.l1_target, c.l1_weight) + term(stats.variance, c.l2_target, c.l2_weight) + term(stats.skewness, c.l3_target, c.l3_weight) + term(stats.kurtosis, c.l4_target, c.l4_weight)
    for (const [k, want] of Object.entries(stats)) arr(r.extra[`norm_info.${k}`]!).forEach((g, i) => expect(Math.abs(g - want[i]!)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(want[i]!))))
    expect(Math.abs(r.loss.data[0]! - loss)).toBeLessThanOrEqual(1e-4 * Math.max(1, loss))
    expect(r.losses['norm_loss']!.data[0]).toBe(r.loss.data[0])
  })

  test.prop([fc.nat(1000), fc.constantFrom(0, 0.5)], { numRuns: 15 })(
    'training perturbs within half a bin with an explicit key, keeps the indices, and needs the key; quantize_rate 1 trains as eval',
    async (seed, rate) => {
      const levels = [5, 4, 3]
      const q = makeFSP(orThrow(decodeFSP({ levels, quantize_rate: rate })))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 8, 3], seed)
      const ev = await applyQ(backend, q, init, x)
      const t1 = await applyQ(backend, q, init, x, { training: true, key: [seed, 1] })
      const t1b = await applyQ(backend, q, init, x, { training: true, key: [seed, 1] })
      const t2 = await applyQ(backend, q, init, x, { training: true, key: [seed, 2] })
      expect(arr(t1.indices)).toEqual(arr(ev.indices))
      expect(arr(t1.quantized)).toEqual(arr(t1b.quantized))
      expect(arr(t1.quantized)).not.toEqual(arr(t2.quantized))
      const p = t1.extra['p_accept_prob']!.data[0]!
      expect(p >= 0 && p <= 1).toBe(true)
      // back to [0, 1]: (q - 1/2) / std inverted; every value stays within half a bin of act(z) and inside (0, 1)
      const z = arr(t1.extra['projected']!)
      arr(t1.quantized).forEach((v, i) => {
        const a = v * 0.28867513459481287 + 0.5
        expect(a > -1e-6 && a < 1 + 1e-6).toBe(true)
        expect(Math.abs(a - act('tanh', z[i]!))).toBeLessThanOrEqual(1 / (2 * levels[i % 3]!) + 1e-5)
      })
      const noKey = await applyOnHost(q, { ...init, x, training: true }, backend)
      expect(E.isLeft(noKey) && noKey.left.where).toBe('FSP.quantize_rate')
      const always = makeFSP(orThrow(decodeFSP({ levels, quantize_rate: 1 })))
      const tr = await applyQ(backend, always, init, x, { training: true })
      expect(arr(tr.quantized)).toEqual(arr(ev.quantized))
    },
  )

  test.prop([fc.nat(1000)], { numRuns: 10 })('gradients: straight through the bins to z with need_inv_act; through the activation without', async (seed) => {
    const x = randn([1, 4, 3], seed)
    const grads: number[][] = []
    for (const inv of [true, false]) {
      const q = makeFSP(orThrow(decodeFSP({ levels: [5, 5, 5], need_inv_act: inv, quantize_rate: 1 })))
      const init = q.init(random.keyFromSeed(seed))
      const r = orThrow(await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) =>
        valueAndGrad((xx: Tensor) => q.apply(p as Named<Tensor>, s as Named<Tensor>, xx, { training: true }).quantized.sum())(xs as Tensor)))
      grads.push(arr(r.grad as never))
    }
    for (const g of grads[0]!) expect(g).toBeCloseTo(1, 5)
    // without the inverse, d/dz of (act(z) - 1/2) / std = (1 - tanh^2 z) / 2 / std
    grads[1]!.forEach((g, i) => expect(g).toBeCloseTo((1 - Math.tanh(x.data[i]!) ** 2) / 2 / 0.28867513459481287, 4))
  })
})

describe('FSP config', () => {
  test.each([
    [{ levels: [] }, 'FSP.levels', /at least one/],
    [{ levels: [8, 0] }, 'FSP.levels[1]', /PositiveInt/],
    [{ levels: [4096, 4096, 4096] }, 'FSP.levels', /2\^24/],
    [{ levels: [8, 5], act_name: 'relu' }, 'FSP.act_name', /unknown CDF activation/],
    [{ levels: [8, 5], act_name: 'toString' }, 'FSP.act_name', /unknown CDF activation/],
    [{ levels: [8, 5], quantize_rate: 1.5 }, 'FSP.quantize_rate', /\[0, 1\]/],
    [{ levels: [8, 5], quantize_rate: NaN }, 'FSP.quantize_rate', /NaN/],
    [{ levels: [8, 5], vector_norm: 'bogus' }, 'FSP.vector_norm', /unknown preset/],
    [{ levels: [8, 5], vector_norm: 'constructor' }, 'FSP.vector_norm', /unknown preset/],
    [{ levels: [8, 5], dim: 0 }, 'FSP.dim', /expected/],
    [{ levels: [8, 5], eps: 1 }, 'FSP.eps', /unknown key "eps"/],
  ])('rejects %j at %s', (input, where, msg) => {
    const r = decodeFSP(input)
    expect(E.isLeft(r)).toBe(true)
    if (E.isRight(r)) return
    expect(r.left.kind).toBe('config')
    expect(r.left.where).toBe(where)
    expect(r.left.message).toMatch(msg)
  })

  test('defaults are the reference: tanh, no inverse, quantize_rate 0, VectorNorm var_tanh, projections only when dim differs', () => {
    const c = orThrow(decodeFSP({ levels: [8, 5, 5, 5] }))
    expect([c.act_name, c.need_inv_act, c.quantize_rate, c.vector_norm, c.dim, c.has_projections, c.codebook_size]).toEqual(['tanh', false, 0, 'var_tanh', 4, false, 1000])
    expect(c.norm.l2_target).toBe(0.8225)
    expect(orThrow(decodeFSP({ levels: [8, 5], dim: 6 })).has_projections).toBe(true)
  })
})
