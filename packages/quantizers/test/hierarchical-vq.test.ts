import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf, valueAndGrad } from '@tessera/core'
import { adaptiveAvgPoolF64, conv2dF64, resizeF64 } from '../../core/test/image-f64.js'
import { decodeHierarchicalVQ, phiForScale } from '../src/hierarchical/config.js'
import type { HierarchicalVQ } from '../src/hierarchical/hierarchical-vq.js'
import { hierarchicalVQ } from '../src/hierarchical/hierarchical-vq.js'
import type { Named } from '../src/quantizer.js'
import { applyOnHost, indicesToCodesOnHost, runOnHost } from '../src/run.js'
import { arr, orThrow, randn, snapshot } from './helpers.js'
import { describeLanes } from './lanes.js'
import { gradRun } from './grad-helpers.js'
import { nodeLanes } from './zoo.js'

const base = { dim: 4, codebook_size: 8, accept_image_fmap: true }
const leftOf = (r: E.Either<{ kind: string; where: string; message: string }, unknown>) => {
  if (E.isRight(r)) throw new Error('expected a Left')
  return r.left
}

describe('HierarchicalVQ config', () => {
  it('resolves the reference defaults (HierarchicalVQ\'s, not VectorQuantize\'s)', () => {
    const c = orThrow(decodeHierarchicalVQ({ ...base, scales: [1, 2, 4] }))
    expect(c).toMatchObject({ quant_resi: 0.5, share_quant_resi: 1, phi_levels: 0, phi_for_scale: [0, 0, 0] })
    expect(c.vq).toMatchObject({ decay: 0.99, commitment_weight: 1, rotation_trick: false, kmeans_init: true, kmeans_iters: 10, threshold_ema_dead_code: 2, sample_codebook_temp: 0.1, orthogonal_reg_max_codes: 128, accept_image_fmap: true })
    expect(orThrow(decodeHierarchicalVQ({ ...base, scales: [1], quant_resi: -0.25 })).quant_resi).toBe(0.25)
  })

  it.each<[Record<string, unknown>, string, RegExp]>([
    [{ dim: 4, codebook_size: 8, scales: [1, 2] }, 'HierarchicalVQ.accept_image_fmap', /accept_image_fmap: true/],
    [{ ...base, accept_image_fmap: false, scales: [1, 2] }, 'HierarchicalVQ.accept_image_fmap', /image feature maps/],
    [{ ...base, scales: [] }, 'HierarchicalVQ.scales', /at least one scale/],
    [{ ...base, scales: [2, 1] }, 'HierarchicalVQ.scales', /sorted ascending, got \[2,1\]/],
    [{ ...base, scales: [1, 0] }, 'HierarchicalVQ.scales[1]', /PositiveInt/],
    [{ ...base, scales: [1, 1.5] }, 'HierarchicalVQ.scales[1]', /PositiveInt/],
    [{ ...base, scales: [1], share_quant_resi: 1.5 }, 'HierarchicalVQ.share_quant_resi', /Int/],
    [{ ...base, scales: [1], quant_resi: NaN }, 'HierarchicalVQ.quant_resi', /NaN/],
    [{ ...base, scales: [1], decay: 2 }, 'HierarchicalVQ.decay', /\[0, 1\]/],
    [{ ...base, scales: [1], orthogonal_reg_max_codes: 0 }, 'HierarchicalVQ.orthogonal_reg_max_codes', /PositiveInt/],
    [{ ...base, scales: [1], codebook_size: 0 }, 'HierarchicalVQ.codebook_size', /PositiveInt/],
    [{ ...base, scales: [1], heads: 2 }, 'HierarchicalVQ.heads', /unknown key "heads"/],
    [{ ...base, scales: [1], kmeans_iters: 0 }, 'HierarchicalVQ.kmeans_iters', /at least 1 with kmeans_init/],
  ])('refuses %j at %s', (o, where, msg) => {
    const l = leftOf(decodeHierarchicalVQ(o))
    expect(l.kind).toBe('config')
    expect(l.where).toBe(where)
    expect(l.message).toMatch(msg)
  })

  it('chooses phi as the reference\'s _choose_phi (relative position, rounded half to even)', () => {
    expect(phiForScale(3, 0)).toEqual([0, 0, 0])
    expect(phiForScale(3, 3)).toEqual([0, 1, 2])
    expect(phiForScale(3, 2)).toEqual([0, 0, 1]) // round(0.5) = 0
    expect(phiForScale(5, 2)).toEqual([0, 0, 0, 1, 1]) // positions 0, .25, .5, .75, 1
    expect(phiForScale(5, 3)).toEqual([0, 0, 1, 2, 2]) // 0, .5, 1, 1.5, 2: half to even
    expect(phiForScale(4, 2)).toEqual([0, 0, 1, 1])
    expect(phiForScale(1, 1)).toEqual([0])
    // share_quant_resi 1 shares one phi; <= 0 gives one per scale; k > 1 gives min(scales, k)
    expect(orThrow(decodeHierarchicalVQ({ ...base, scales: [1, 2, 3], share_quant_resi: 0 })).phi_levels).toBe(3)
    expect(orThrow(decodeHierarchicalVQ({ ...base, scales: [1, 2, 3], share_quant_resi: -2 })).phi_levels).toBe(3)
    expect(orThrow(decodeHierarchicalVQ({ ...base, scales: [1, 2, 3], share_quant_resi: 5 })).phi_levels).toBe(3)
    expect(orThrow(decodeHierarchicalVQ({ ...base, scales: [1, 2, 3], share_quant_resi: 2 })).phi_for_scale).toEqual([0, 0, 1])
  })

  it('parameters and buffers carry the reference\'s state-dict names', () => {
    const shared = orThrow(hierarchicalVQ({ ...base, scales: [1, 2] }))
    expect(Object.keys(shared.paramSpecs).sort()).toEqual(['phi_shared.conv.bias', 'phi_shared.conv.weight'])
    expect(shared.paramSpecs['phi_shared.conv.weight']!.shape).toEqual([4, 4, 3, 3])
    expect(Object.keys(shared.stateSpecs).sort()).toEqual(['vq._codebook.cluster_size', 'vq._codebook.embed', 'vq._codebook.embed_avg', 'vq._codebook.initted'])
    const levels = orThrow(hierarchicalVQ({ ...base, scales: [1, 2, 3], share_quant_resi: 2 }))
    expect(Object.keys(levels.paramSpecs).sort()).toEqual(['phi_levels.0.conv.bias', 'phi_levels.0.conv.weight', 'phi_levels.1.conv.bias', 'phi_levels.1.conv.weight'])
    // torch's Conv2d init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = 4 * 9
    const init = levels.init(random.keyFromSeed(3))
    const bound = 1 / 6
    for (const k of Object.keys(levels.paramSpecs)) expect(arr(init.params[k]!).every((v) => Math.abs(v) <= bound)).toBe(true)
    expect(arr(init.params['phi_levels.0.conv.weight']!)).not.toEqual(arr(init.params['phi_levels.1.conv.weight']!))
  })
})

const f64 = (t: HostTensor) => Float64Array.from(t.data)
const sub = (a: ArrayLike<number>, b: ArrayLike<number>) => Float64Array.from(a, (v, i) => v - b[i]!)
function expectNear(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string) {
  expect(got.length, what).toBe(want.length)
  for (let i = 0; i < want.length; i++) if (!(Math.abs(got[i]! - want[i]!) <= tol * (1 + Math.abs(want[i]!)))) throw new Error(`${what}: element ${i} is ${got[i]}, want ${want[i]}`)
}

/** phi on the host in float64: (1 - r) q + r (conv3x3(q, padding 1) + bias), with scale i's phi parameters. */
function phiF64(q: HierarchicalVQ, params: Named<HostTensor>, i: number, up: Float64Array, shape: number[]): Float64Array {
  const r = q.config.quant_resi
  const p = q.config.phi_levels === 0 ? 'phi_shared.conv.' : `phi_levels.${q.config.phi_for_scale[i]}.conv.`
  const w = params[`${p}weight`]!, b = params[`${p}bias`]!
  const conv = conv2dF64(up, shape, w.data, w.shape, b.data, { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 }).data
  return Float64Array.from(up, (v, k) => Math.fround(1 - r) * v + Math.fround(r) * conv[k]!)
}

describeLanes('hierarchical-vq', nodeLanes, (l) => `HierarchicalVQ on ${l.name}`, (backend: Backend) => {
  // scale 3 pools 5x6 over uneven windows and resizes 3 -> 5 and 3 -> 6; two phi levels over four scales
  const q = orThrow(hierarchicalVQ({ ...base, scales: [1, 2, 3, 4], kmeans_init: false, share_quant_resi: 2, quant_resi: 0.4 }))
  const init = q.init(random.keyFromSeed(11))
  const embed = init.state['vq._codebook.embed']!

  it('each scale quantizes the pooled residual left by the scales before it, and the output is the sum of their phi(resize(codes))', async () => {
    const xs = [2, 4, 5, 6]
    const x = randn(xs, 5)
    const before = snapshot(init.state)
    const r = orThrow(await applyOnHost(q, { ...init, x }, backend))
    expect(r.quantized.shape).toEqual(xs)
    expect(r.loss.data[0]).toBe(0)
    expect(snapshot(r.state)).toEqual(before)
    let residual = f64(x)
    let sum = new Float64Array(residual.length)
    const flat: number[][] = [[], []]
    q.config.scales.forEach((s, i) => {
      const down = adaptiveAvgPoolF64(residual, xs, [s, s]).data
      expectNear(r.extra[`scale${i}_vq_input`]!.data, down, 1e-5, `scale ${i} input`)
      // the nearest code of each pooled pixel (channel-first), and the codes put back in the map
      const ind = r.extra[`indices.${i}`]!, qi = r.extra[`scale${i}_quantized`]!
      expect(ind.shape).toEqual([2, s, s])
      for (let b = 0; b < 2; b++)
        for (let p = 0; p < s * s; p++) {
          const pix = [0, 1, 2, 3].map((c) => r.extra[`scale${i}_vq_input`]!.data[(b * 4 + c) * s * s + p]!)
          const dist = (k: number) => pix.reduce((a, v, c) => a + (v - embed.data[k * 4 + c]!) ** 2, 0)
          const k = ind.data[b * s * s + p]!
          for (let j = 0; j < 8; j++) expect(dist(j)).toBeGreaterThanOrEqual(dist(k) - 1e-5)
          for (let c = 0; c < 4; c++) expect(qi.data[(b * 4 + c) * s * s + p]).toBe(embed.data[k * 4 + c])
          flat[b]!.push(k)
        }
      const resized = s === 5 ? f64(qi) : resizeF64(qi.data, [2, 4, s, s], [5, 6], 'bilinear', false).data
      const up = phiF64(q, init.params, i, resized, xs)
      expectNear(r.extra[`scale${i}_upsampled`]!.data, up, 1e-5, `scale ${i} upsampled`)
      // the next scale sees the residual the port computed (decisions are compared, not re-made)
      residual = sub(residual, r.extra[`scale${i}_upsampled`]!.data)
      sum = Float64Array.from(sum, (v, k) => v + r.extra[`scale${i}_upsampled`]!.data[k]!)
    })
    expectNear(r.quantized.data, sum, 1e-5, 'reconstruction')
    expect(r.indices.shape).toEqual([2, 1 + 4 + 9 + 16])
    expect(arr(r.indices)).toEqual(flat.flat())
  })

  it('indicesToCodes (get_output_from_indices) rebuilds the output of an S x S input', async () => {
    const x = randn([2, 4, 4, 4], 9)
    const r = orThrow(await applyOnHost(q, { ...init, x }, backend))
    const codes = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, backend, undefined, init.state))
    expectNear(codes.data, r.quantized.data, 1e-6, 'output from indices')
  })

  it('gradients reach the phi convolutions: d sum(w * out) / d bias_k = r * (scales using phi k) * sum of w over b, h, w', async () => {
    const x = randn([2, 4, 4, 4], 4)
    const w = randn([2, 4, 4, 4], 6)
    const g = orThrow(await runOnHost(backend, [init.params, init.state, x, w] as const, (p, s, xx, ww) => {
      const f = (pi: Named<Tensor>, si: Named<Tensor>, xi: Tensor, wi: Tensor) => q.apply(pi, si, xi, { training: false }).quantized.mul(wi).sum()
      return valueAndGrad(f, [0] as const)(p as Named<Tensor>, s as Named<Tensor>, xx as Tensor, ww as Tensor).grad[0]
    })) as Named<HostTensor>
    const wsum = [0, 1, 2, 3].map((c) => [0, 1].reduce((a, b) => a + arr(w).slice((b * 4 + c) * 16, (b * 4 + c + 1) * 16).reduce((s, v) => s + v, 0), 0))
    for (const k of [0, 1]) {
      const uses = q.config.phi_for_scale.filter((p) => p === k).length
      expectNear(g[`phi_levels.${k}.conv.bias`]!.data, wsum.map((v) => Math.fround(0.4) * uses * v), 1e-5, `bias ${k}`)
    }
  })

  it('in training the gradient w.r.t. x is the straight-through one: that of the linear map with every scale\'s codes replaced by its pooled residual', async () => {
    // EMA on, so the codebook changes between scales: no gradient may leak through it
    const qt = orThrow(hierarchicalVQ({ ...base, scales: [1, 3, 4], kmeans_init: false, threshold_ema_dead_code: 0, share_quant_resi: 0, quant_resi: 0.3 }))
    const it0 = qt.init(random.keyFromSeed(21))
    const xs = [2, 4, 4, 5]
    const x = randn(xs, 12), w = randn(xs, 13)
    const g = await gradRun(backend, qt, it0, x, w, { training: true })
    expect(arr(g.quantized).every(Number.isFinite)).toBe(true)
    const linear = (xx: Float64Array): Float64Array => {
      let residual = xx
      const out = new Float64Array(xx.length)
      qt.config.scales.forEach((s, i) => {
        const down = adaptiveAvgPoolF64(residual, xs, [s, s]).data
        const up = phiF64(qt, it0.params, i, resizeF64(down, [2, 4, s, s], [4, 5], 'bilinear', false).data, xs)
        up.forEach((v, k) => (out[k] = out[k]! + v))
        residual = sub(residual, up)
      })
      return out
    }
    const dot = (a: Float64Array) => a.reduce((acc, v, k) => acc + v * w.data[k]!, 0)
    const f0 = dot(linear(new Float64Array(x.data.length)))
    const want = Array.from(x.data, (_, i) => dot(linear(Float64Array.from(x.data, (_, k) => (k === i ? 1 : 0)))) - f0)
    expectNear(g.gx.data, want, 1e-5, 'd sum(w * out) / dx')
  })
})

describe('HierarchicalVQ in training', () => {
  const backend = nodeLanes[0]!
  it('runs k-means on the first scale, threads the codebook state through the scales, and averages the scale losses', async () => {
    const be = (await backend.make()) as Backend
    const q = orThrow(hierarchicalVQ({ ...base, scales: [1, 2, 4] }))
    const init = q.init(random.keyFromSeed(2))
    expect(init.state['vq._codebook.initted']!.data[0]).toBe(0)
    const x = randn([3, 4, 4, 4], 8)
    const noKey = await applyOnHost(q, { ...init, x, training: true }, be)
    expect(E.isLeft(noKey) && noKey.left.message).toMatch(/key/)
    const r = orThrow(await applyOnHost(q, { ...init, x, training: true, key: tensorOf([5, 6], [2], 'int32') }, be))
    expect(r.state['vq._codebook.initted']!.data[0]).toBe(1)
    expect(arr(r.state['vq._codebook.cluster_size']!)).not.toEqual(arr(init.state['vq._codebook.cluster_size']!))
    const per = [0, 1, 2].map((i) => r.losses[`scale${i}`]!.data[0]!)
    expect(per.every((v) => Number.isFinite(v) && v > 0)).toBe(true)
    expect(r.loss.data[0]).toBeCloseTo(per.reduce((a, b) => a + b, 0) / 3, 6)
    // commitment_weight 1 and nothing else: each scale's loss is its commitment term
    per.forEach((v, i) => expect(v).toBeCloseTo(r.losses[`scale${i}.commitment`]!.data[0]!, 6))
  })

  it('the per-call sampleCodebookTemp reaches the VectorQuantize: 0 picks the nearest codes, a high temperature samples others', async () => {
    const be = (await backend.make()) as Backend
    const q = orThrow(hierarchicalVQ({ ...base, scales: [4], kmeans_init: false, threshold_ema_dead_code: 0, stochastic_sample_codes: true }))
    const init = q.init(random.keyFromSeed(4))
    const x = randn([2, 4, 4, 4], 5)
    const nearest = orThrow(await applyOnHost(q, { ...init, x }, be)).indices
    const sampled = async (temp: number) =>
      orThrow(await runOnHost(be, [init.params, init.state, x, tensorOf([3, 4], [2], 'int32')] as const, (p, s, xx, k) =>
        q.apply(p as Named<Tensor>, s as Named<Tensor>, xx as Tensor, { training: true, key: k as Tensor, sampleCodebookTemp: temp }).indices,
      ))
    expect(arr(await sampled(0))).toEqual(arr(nearest))
    expect(arr(await sampled(100))).not.toEqual(arr(nearest))
  })

  it('quant_resi 0 makes phi the identity (its parameters stay in the state dict)', async () => {
    const be = (await backend.make()) as Backend
    const q = orThrow(hierarchicalVQ({ ...base, scales: [2, 4], kmeans_init: false, quant_resi: 0 }))
    expect(Object.keys(q.paramSpecs)).toContain('phi_shared.conv.weight')
    const init = q.init(random.keyFromSeed(1))
    const r = orThrow(await applyOnHost(q, { ...init, x: randn([1, 4, 4, 4], 3) }, be))
    const qi = r.extra['scale0_quantized']!
    expectNear(r.extra['scale0_upsampled']!.data, resizeF64(qi.data, [1, 4, 2, 2], [4, 4], 'bilinear', false).data, 1e-6, 'resized codes')
    expect(arr(r.extra['scale1_upsampled']!)).toEqual(arr(r.extra['scale1_quantized']!))
  })

  it('refuses an input that is not a (b, dim, h, w) float32 map, naming it', async () => {
    const be = (await backend.make()) as Backend
    const q = orThrow(hierarchicalVQ({ ...base, scales: [1, 2], kmeans_init: false }))
    const init = q.init(random.keyFromSeed(1))
    const rank = await applyOnHost(q, { ...init, x: randn([2, 4, 4], 1) }, be)
    expect(E.isLeft(rank) && rank.left.message).toMatch(/HierarchicalVQ: expects an image feature map \(batch, channels, height, width\), got \[2,4,4\]/)
    const ch = await applyOnHost(q, { ...init, x: randn([2, 3, 4, 4], 1) }, be)
    expect(E.isLeft(ch) && ch.left.message).toMatch(/has 3 channels; expected dim 4/)
    const idx = await indicesToCodesOnHost(q, init.params, tensorOf([0, 1, 2], [1, 3], 'int32'), be, undefined, init.state)
    expect(E.isLeft(idx) && idx.left.message).toMatch(/indices must be \(batch, 5\)/)
  })
})
