import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, scoped, tensorOf } from '@tessera/core'
import { residualVQ, type ResidualVQ } from '../src/residual-vq/residual-vq.js'
import { groupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import { decodeRVQ } from '../src/residual-vq/config.js'
import { applyOnHost, indicesToCodesOnHost, runOnHost } from '../src/run.js'
import type { Init, Named, Quantizer } from '../src/quantizer.js'
import type { Tensor } from '@tessera/core'
import { arr, backends, orThrow, randn, snapshot } from './helpers.js'

const backend = backends[0]!
const key = (a: number) => tensorOf([a, 3], [2], 'int32')
async function run(q: Quantizer, init: Init, x: HostTensor, training = false, k?: HostTensor, freezeCodebook?: boolean) {
  if (freezeCodebook !== undefined) {
    const r = await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) => {
      const res = (q as ResidualVQ).apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training, freezeCodebook })
      return { quantized: res.quantized, indices: res.indices, state: { ...res.state } }
    })
    return orThrow(r) as { quantized: HostTensor; indices: HostTensor; state: Record<string, HostTensor> }
  }
  return orThrow(await applyOnHost(q, { params: init.params, state: init.state, x, training, ...(k ? { key: k } : {}) }, backend))
}
const allCodes = async (q: ResidualVQ, init: Init, idx: HostTensor) =>
  orThrow(await runOnHost(backend, [init.params, init.state, idx] as const, (p, s, i) => q.codesFromIndices(p as Named<Tensor>, i as Tensor, s as Named<Tensor>)))

describe('ResidualVQ', () => {
  test.prop([fc.integer({ min: 1, max: 4 }), fc.boolean(), fc.boolean(), fc.integer({ min: 0, max: 999 })], { numRuns: 20 })(
    'outputs sum to the reconstruction; indicesToCodes == quantized; per-layer codes are codebook rows',
    async (nq, shared, proj, seed) => {
      const q = orThrow(residualVQ({ dim: 6, num_quantizers: nq, codebook_size: 5, shared_codebook: shared, ...(proj ? { codebook_dim: 3 } : {}) }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 4, 6], seed + 1)
      const r = await run(q, init, x)
      expect(r.indices.shape).toEqual([2, 4, nq])
      const codes = await allCodes(q, init, r.indices)
      expect(codes.shape).toEqual([nq, 2, 4, proj ? 3 : 6])
      const fromIdx = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, backend, undefined, init.state))
      arr(fromIdx).forEach((v, i) => expect(Math.abs(v - r.quantized.data[i]!)).toBeLessThan(1e-5))
      if (!proj) {
        const d = 6, sum = new Array(2 * 4 * d).fill(0)
        for (let l = 0; l < nq; l++) for (let i = 0; i < sum.length; i++) sum[i] += codes.data[l * sum.length + i]!
        sum.forEach((v, i) => expect(Math.abs(v - r.quantized.data[i]!)).toBeLessThan(1e-5))
      }
    },
  )

  it('image input (accept_image_fmap): (b, c, h, w) in and out, indices (b, h, w, q)', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6, accept_image_fmap: true }))
    const init = q.init(random.keyFromSeed(2))
    const r = await run(q, init, randn([2, 4, 3, 2], 1))
    expect(r.quantized.shape).toEqual([2, 4, 3, 2])
    expect(r.indices.shape).toEqual([2, 3, 2, 2])
  })

  it('quantize dropout: layers past a keyed cut-off give index -1 and no contribution', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 4, codebook_size: 6, quantize_dropout: true, freeze_codebook: true }))
    const init = q.init(random.keyFromSeed(3))
    const x = randn([1, 5, 4], 4)
    const cuts = new Set<number>()
    for (let k = 0; k < 12; k++) {
      const r = await run(q, init, x, true, key(k))
      const idx = arr(r.indices)
      const active = idx.slice(0, 4).filter((v) => v !== -1).length
      cuts.add(active)
      for (let t = 0; t < 5; t++) expect(idx.slice(t * 4, t * 4 + 4).map((v) => v === -1)).toEqual([0, 1, 2, 3].map((l) => l >= active))
      const fromIdx = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, backend, undefined, init.state))
      arr(fromIdx).forEach((v, i) => expect(Math.abs(v - r.quantized.data[i]!)).toBeLessThan(1e-4))
    }
    expect(cuts.size).toBeGreaterThan(1)
    const nokey = await applyOnHost(q, { params: init.params, state: init.state, x, training: true }, backend)
    expect(E.isLeft(nokey) && nokey.left.message).toMatch(/quantize_dropout.*key/)
  })

  it('shared codebook: one state, eval output unchanged by training steps that leave it unchanged', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 8, shared_codebook: true, ema_update: false }))
    expect(Object.keys(q.stateSpecs).every((k) => k.startsWith('layers.0.'))).toBe(true)
    const init = q.init(random.keyFromSeed(5))
    const x = randn([2, 3, 4], 6)
    const before = await run(q, init, x)
    const trained = await run(q, init, x, true)
    expect(snapshot(trained.state)).toEqual(snapshot(init.state))
    const after = await run(q, { params: init.params, state: trained.state }, x)
    expect(arr(after.quantized)).toEqual(arr(before.quantized))
    expect(arr(after.indices)).toEqual(arr(before.indices))
  })

  it('shared codebook with EMA: statistics from every layer, embed recomputed once from them', async () => {
    const decay = 0.8, eps = 1e-5, K = 4, d = 3
    const q = orThrow(residualVQ({ dim: d, num_quantizers: 2, codebook_size: K, shared_codebook: true, decay }))
    const init = q.init(random.keyFromSeed(7))
    const x = randn([1, 5, d], 8)
    const r = await run(q, init, x, true)
    const idx = arr(r.indices) // (1, 5, 2)
    // layer inputs: x, then x - code(layer 0), with the pre-update codebook
    const e0 = arr(init.state['layers.0._codebook.embed']!)
    let cs = arr(init.state['layers.0._codebook.cluster_size']!)
    let ea = arr(init.state['layers.0._codebook.embed_avg']!)
    const res = arr(x)
    for (let l = 0; l < 2; l++) {
      const counts = new Array(K).fill(0), sums = new Array(K * d).fill(0)
      for (let t = 0; t < 5; t++) {
        const k = idx[t * 2 + l]!
        counts[k]++
        for (let j = 0; j < d; j++) sums[k * d + j] += res[t * d + j]!
      }
      cs = cs.map((c, k) => c + 0.2 * (counts[k] - c))
      ea = ea.map((a, i) => a + 0.2 * (sums[i] - a))
      for (let t = 0; t < 5; t++) for (let j = 0; j < d; j++) res[t * d + j] -= e0[idx[t * 2 + l]! * d + j]!
    }
    const tot = cs.reduce((a, b) => a + b, 0)
    const embed = ea.map((a, i) => a / (((cs[Math.floor(i / d)]! + eps) / (tot + K * eps)) * tot))
    arr(r.state['layers.0._codebook.cluster_size']!).forEach((v, i) => expect(v).toBeCloseTo(cs[i]!, 5))
    arr(r.state['layers.0._codebook.embed']!).forEach((v, i) => expect(v).toBeCloseTo(embed[i]!, 4))
  })

  it('per-call freezeCodebook leaves every layer state as it was', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6 }))
    const init = q.init(random.keyFromSeed(1))
    const x = randn([2, 3, 4], 2)
    const frozen = await run(q, init, x, true, undefined, true)
    expect(snapshot(frozen.state)).toEqual(snapshot(init.state))
    const live = await run(q, init, x, true, undefined, false)
    expect(snapshot(live.state)).not.toEqual(snapshot(init.state))
  })

  it('per-call manualEmaUpdate is refused by name: the reference\'s ResidualVQ.forward does not take it', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6 }))
    const init = q.init(random.keyFromSeed(4))
    const x = randn([2, 3, 4], 5)
    const r = await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) => ({
      ...q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training: true, manualEmaUpdate: true } as Parameters<ResidualVQ['apply']>[3]).state,
    }))
    expect(E.isLeft(r) && r.left.where).toBe('ResidualVQ.manualEmaUpdate')
  })

  it('config: Lefts name the field', () => {
    const cases: [unknown, string][] = [
      [{ dim: 4, codebook_size: 8 }, 'ResidualVQ.num_quantizers'],
      [{ dim: 4, codebook_size: [8, 4], num_quantizers: 3 }, 'ResidualVQ.codebook_size'],
      [{ dim: 4, codebook_size: [8, 4], shared_codebook: true }, 'ResidualVQ.shared_codebook'],
      [{ dim: 4, codebook_size: 8, num_quantizers: 2, heads: 2 }, 'ResidualVQ.heads'],
      [{ dim: 4, codebook_size: 8, num_quantizers: 2, beam_size: 9 }, 'ResidualVQ.beam_size'],
      [{ dim: 4, codebook_size: 8, num_quantizers: 2, decay: -1 }, 'ResidualVQ.decay'],
    ]
    for (const [input, where] of cases) {
      const r = decodeRVQ(input)
      if (E.isRight(r)) throw new Error(`expected a Left for ${JSON.stringify(input)}`)
      expect(r.left.where).toBe(where)
    }
  })
})

describe('GroupedResidualVQ', () => {
  it('equals the concatenation of its groups, run on their slices', async () => {
    const g = orThrow(groupedResidualVQ({ dim: 6, groups: 2, num_quantizers: 2, codebook_size: 5 }))
    const init = g.init(random.keyFromSeed(9))
    const x = randn([2, 3, 6], 10)
    const r = await run(g, init, x)
    expect(r.indices.shape).toEqual([2, 2, 3, 2])
    const single = orThrow(residualVQ({ dim: 3, num_quantizers: 2, codebook_size: 5 }))
    for (let gi = 0; gi < 2; gi++) {
      const sub = { params: scoped(init.params, `rvqs.${gi}.`), state: scoped(init.state, `rvqs.${gi}.`) }
      const xs = tensorOf(Array.from({ length: 6 }, (_, t) => arr(x).slice(t * 6 + gi * 3, t * 6 + gi * 3 + 3)).flat(), [2, 3, 3])
      const rg = await run(single, sub, xs)
      for (let t = 0; t < 6; t++) expect(arr(r.quantized).slice(t * 6 + gi * 3, t * 6 + gi * 3 + 3)).toEqual(arr(rg.quantized).slice(t * 3, t * 3 + 3))
      expect(arr(r.indices).slice(gi * 12, gi * 12 + 12)).toEqual(arr(rg.indices))
    }
    const fromIdx = orThrow(await indicesToCodesOnHost(g, init.params, r.indices, backend, undefined, init.state))
    arr(fromIdx).forEach((v, i) => expect(Math.abs(v - r.quantized.data[i]!)).toBeLessThan(1e-5))
  })
})
