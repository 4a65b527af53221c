import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor, TesseraError } from '@tessera/core'
import { random, scoped, tensorOf, valueAndGrad } from '@tessera/core'
import type { Init, Named, Quantizer } from '../src/quantizer.js'
import type { ResidualVQ } from '../src/residual-vq/residual-vq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { groupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { AFFINE } from '../src/vq/affine.js'
import { joinStateDict } from '../src/io/state-dict.js'
import { loadTorchStateDict } from '../src/io/torch.js'
import { cpuBackend } from '@tessera/backend-cpu'
import { runOnHost } from '../src/run.js'
import { orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { tolerance } from './matrix-common.js'
import { maskOf } from './vq-call.js'
import { nodeLanes } from './zoo.js'
import { adam } from '../../nn/src/optim.js'
import { pythonRandrange } from '../src/common/python-random.js'
import { linearStage } from '../src/sequential/sequential.js'

/**
 * ResidualVQ hands VectorQuantize's layer options to every layer, as the reference's `**vq_kwargs`:
 * a one-layer ResidualVQ with an option is a VectorQuantize with it, and each layer of a deeper one
 * follows its own state under `layers.{i}.`. Options it cannot carry are refused by name.
 */

const D = 3, B = 2, N = 6
const AFF = { affine_param: true, affine_param_batch_decay: 0.7, affine_param_codebook_decay: 0.6 }
const MASK = maskOf([
  [1, 1, 0, 1, 1, 0],
  [1, 0, 1, 1, 1, 1],
])

type Rec = Record<string, HostTensor>
interface Out { readonly quantized: HostTensor; readonly indices: HostTensor; readonly loss: HostTensor; readonly losses: Rec; readonly state: Rec; readonly updatedParams: Rec }

function near(backend: Backend, got: HostTensor | undefined, want: HostTensor | undefined, what: string) {
  expect(got, `${what} missing`).toBeDefined()
  expect(want, `${what} missing in the VectorQuantize run`).toBeDefined()
  expect(got!.shape, what).toEqual(want!.shape)
  expect(got!.dtype, what).toBe(want!.dtype)
  if (got!.dtype !== 'float32') {
    expect(Array.from(got!.data), what).toEqual(Array.from(want!.data))
    return
  }
  got!.data.forEach((g, i) => {
    const w = want!.data[i]!
    expect(Math.abs(g - w), `${what}[${i}]: ${g} vs ${w}`).toBeLessThanOrEqual(tolerance(backend.caps, w))
  })
}

/** A layer's outputs as a ResidualVQ names them, keyed as VectorQuantize names its own. */
function layerOf(r: Out, i: number, nq: number): Out {
  const p = `layers.${i}.`
  const pick = (rec: Rec) => Object.fromEntries(Object.entries(rec).filter(([k]) => k.startsWith(p)).map(([k, v]) => [k.slice(p.length), v]))
  const idx = r.indices
  const per = idx.data.length / nq
  const data = Int32Array.from({ length: per }, (_, j) => idx.data[j * nq + i]!)
  return { quantized: r.quantized, indices: tensorOf(data, idx.shape.slice(0, -1), 'int32'), loss: r.loss, losses: pick(r.losses), state: pick(r.state), updatedParams: pick(r.updatedParams) }
}

function sameLayer(backend: Backend, got: Out, want: Out, what: string) {
  expect(Object.keys(got.state).sort(), `${what} state names`).toEqual(Object.keys(want.state).sort())
  for (const k of Object.keys(want.state)) near(backend, got.state[k], want.state[k], `${what} state ${k}`)
  near(backend, got.indices, want.indices, `${what} indices`)
  expect(Object.keys(got.losses).sort(), `${what} loss names`).toEqual(Object.keys(want.losses).sort())
  for (const k of Object.keys(want.losses)) near(backend, got.losses[k], want.losses[k], `${what} loss ${k}`)
  expect(Object.keys(got.updatedParams).sort(), `${what} updatedParams names`).toEqual(Object.keys(want.updatedParams).sort())
  for (const k of Object.keys(want.updatedParams)) near(backend, got.updatedParams[k], want.updatedParams[k], `${what} updatedParams ${k}`)
}

const outOf = (r: { quantized: Tensor; indices: Tensor; loss: Tensor; losses: Named<Tensor>; state: Named<Tensor>; updatedParams?: Named<Tensor> }) =>
  ({ quantized: r.quantized, indices: r.indices, loss: r.loss, losses: { ...r.losses }, state: { ...r.state }, updatedParams: { ...(r.updatedParams ?? {}) } })

/** The parameters a training step adopts from a forward that rewrote some. */
const adopt = (p: Named<Tensor>, updated: Named<Tensor> | undefined, prefix = '') =>
  ({ ...p, ...Object.fromEntries(Object.entries(updated ?? {}).map(([k, v]) => [`${prefix}${k}`, v])) })

const INPLACE = { learnable_codebook: true, ema_update: false, in_place_codebook_optimizer: orThrow(adam({ lr: 0.05 })) }

/** Options each checked against VectorQuantize (with a mask where the option concerns masked tokens). */
const CASES: readonly { name: string; opts: Record<string, unknown>; mask: boolean }[] = [
  { name: 'affine_param with its decays', opts: { ...AFF }, mask: false },
  { name: 'affine_param with a mask and sync_affine_param', opts: { ...AFF, sync_affine_param: true }, mask: true },
  { name: 'return_zeros_for_masked_padding: false', opts: { return_zeros_for_masked_padding: false }, mask: true },
  { name: 'commitment_use_cross_entropy_loss', opts: { commitment_use_cross_entropy_loss: true }, mask: true },
  { name: 'sync_update_v on a learnable codebook', opts: { learnable_codebook: true, ema_update: false, sync_update_v: 0.5 }, mask: false },
  { name: 'in_place_codebook_optimizer (adam)', opts: INPLACE, mask: false },
  { name: 'vq_bridge (a linear stage) with affine_param', opts: { vq_bridge: linearStage(D, D), ...AFF }, mask: false },
  { name: 'in_place_codebook_optimizer with a mask and affine_param', opts: { ...INPLACE, ...AFF }, mask: true },
  { name: 'affine_param without the rotation trick, and layernorm_after_project_in (a no-op: layers have no projection)', opts: { ...AFF, rotation_trick: false, layernorm_after_project_in: true }, mask: false },
]

/**
 * A ResidualVQ's training call beside its layers run one by one, layer i as VectorQuantize
 * `vqs[i]` on the residual left by the ones before, with the parameters `layerParams` picks (by
 * default its own, under `layers.{i}.`), on the host.
 */
async function wholeAndLayers(
  backend: Backend,
  rq: ResidualVQ,
  vqs: readonly VectorQuantize[],
  init: Init,
  x: HostTensor,
  layerParams: (ps: Named<Tensor>, i: number) => Named<Tensor> = (ps, i) => scoped(ps, `layers.${i}.`),
): Promise<{ whole: Out; layers: Out[] }> {
  const r = await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) => {
    const ps = p as Named<Tensor>, ss = s as Named<Tensor>
    const whole = rq.apply(ps, ss, xs as Tensor, { training: true })
    let res = xs as Tensor
    const layers = vqs.map((vq, i) => {
      const v = vq.apply(layerParams(ps, i), scoped(ss, `layers.${i}.`), res, { training: true })
      res = res.sub(v.quantized)
      return outOf(v)
    })
    return { whole: outOf(whole), layers }
  })
  return orThrow(r) as unknown as { whole: Out; layers: Out[] }
}

describeLanes('rvq-layer-options', nodeLanes, (lane) => `ResidualVQ layer options on ${lane.name}`, (backend) => {
  for (const c of CASES) {
    it(`one layer with ${c.name} is VectorQuantize with it, over two training steps and an eval call`, async () => {
      const K = 5
      const rq = orThrow(residualVQ({ dim: D, codebook_size: K, num_quantizers: 1, ...c.opts }))
      const vq = orThrow(vectorQuantize({ dim: D, codebook_size: K, ...c.opts }))
      const init = rq.init(random.keyFromSeed(3))
      const x1 = randn([B, N, D], 1), x2 = randn([B, N, D], 2, 1.5)
      const r = await runOnHost(backend, [init.params, init.state, x1, x2, MASK] as const, (p, s, a, b2, m) => {
        const ps = p as Named<Tensor>, mask = c.mask ? { mask: m as Tensor } : {}
        const r1 = rq.apply(ps, s as Named<Tensor>, a as Tensor, { training: true, ...mask })
        const r2 = rq.apply(adopt(ps, r1.updatedParams), r1.state, b2 as Tensor, { training: true, ...mask })
        const r3 = rq.apply(adopt(adopt(ps, r1.updatedParams), r2.updatedParams), r2.state, a as Tensor, { training: false, ...mask })
        const lp = scoped(ps, 'layers.0.')
        const v1 = vq.apply(lp, scoped(s as Named<Tensor>, 'layers.0.'), a as Tensor, { training: true, ...mask })
        const v2 = vq.apply(adopt(lp, v1.updatedParams), v1.state, b2 as Tensor, { training: true, ...mask })
        const v3 = vq.apply(adopt(adopt(lp, v1.updatedParams), v2.updatedParams), v2.state, a as Tensor, { training: false, ...mask })
        return { rvq: [r1, r2, r3].map(outOf), vq: [v1, v2, v3].map(outOf) }
      })
      const o = orThrow(r) as unknown as { rvq: Out[]; vq: Out[] }
      o.rvq.forEach((ro, step) => {
        const what = `${c.name}, call ${step + 1}`
        sameLayer(backend, layerOf(ro, 0, 1), o.vq[step]!, what)
        near(backend, ro.quantized, o.vq[step]!.quantized, `${what} quantized`)
        near(backend, ro.loss, o.vq[step]!.loss, `${what} loss`)
      })
      if (c.opts['affine_param']) expect(Object.keys(o.rvq[0]!.state)).toContain(`layers.0.${AFFINE.batchMean}`)
      // the in-place step rewrites the codebook in training only
      if (c.opts['in_place_codebook_optimizer']) expect(o.rvq.map((r) => Object.keys(r.updatedParams))).toEqual([['layers.0._codebook.embed'], ['layers.0._codebook.embed'], []])
      if (c.opts['return_zeros_for_masked_padding'] === false) {
        // masked-out tokens come back as the input itself, not zeros
        const q = o.rvq[0]!.quantized
        MASK.data.forEach((keep, t) => {
          if (!keep) for (let j = 0; j < D; j++) expect(q.data[t * D + j]).toBe(x1.data[t * D + j])
        })
      }
    })
  }

  it('two layers with affine_param: each layer is a VectorQuantize on its residual, its statistics under layers.{i}.', async () => {
    const sizes = [5, 4]
    const rq = orThrow(residualVQ({ dim: D, codebook_size: sizes, ...AFF }))
    const vqs = sizes.map((k) => orThrow(vectorQuantize({ dim: D, codebook_size: k, ...AFF })))
    const init = rq.init(random.keyFromSeed(8))
    const x = randn([B, N, D], 5)
    const o = await wholeAndLayers(backend, rq, vqs, init, x)
    o.layers.forEach((want, i) => sameLayer(backend, layerOf(o.whole, i, 2), want, `layer ${i}`))
    // the statistics differ per layer: layer 1 saw the residual, not the input
    const bm = (i: number) => Array.from(o.whole.state[`layers.${i}.${AFFINE.batchMean}`]!.data)
    expect(bm(0)).not.toEqual(bm(1))
  })

  it('two layers with an in-place optimizer: each layer steps its own codebook, handed back under layers.{i}.', async () => {
    const rq = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, ...INPLACE }))
    const vq = orThrow(vectorQuantize({ dim: D, codebook_size: 5, ...INPLACE }))
    const init = rq.init(random.keyFromSeed(10))
    const x = randn([B, N, D], 7)
    const o = await wholeAndLayers(backend, rq, [vq, vq], init, x)
    expect(Object.keys(o.whole.updatedParams).sort()).toEqual(['layers.0._codebook.embed', 'layers.1._codebook.embed'])
    o.layers.forEach((want, i) => sameLayer(backend, layerOf(o.whole, i, 2), want, `layer ${i}`))
    expect(Array.from(o.whole.updatedParams['layers.1._codebook.embed']!.data)).not.toEqual(Array.from(init.params['layers.1._codebook.embed']!.data))
  })

  it('two layers with a vq_bridge: one set of bridge parameters under layers.0., used by every layer', async () => {
    const rq = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, vq_bridge: linearStage(D, D) }))
    const vq = orThrow(vectorQuantize({ dim: D, codebook_size: 5, vq_bridge: linearStage(D, D) }))
    const bridgeNames = Object.keys(rq.paramSpecs).filter((k) => k.includes('vq_bridge'))
    expect(bridgeNames.sort()).toEqual(Object.keys(vq.paramSpecs).filter((k) => k.includes('vq_bridge')).map((k) => `layers.0.${k}`).sort())
    const init = rq.init(random.keyFromSeed(13))
    expect(Object.keys(init.params).sort()).toEqual(Object.keys(rq.paramSpecs).sort())
    // every layer reads the one set of bridge parameters, layer 0's
    const tied = (ps: Named<Tensor>) => Object.fromEntries(Object.entries(scoped(ps, 'layers.0.')).filter(([k]) => k.includes('vq_bridge')))
    const o = await wholeAndLayers(backend, rq, [vq, vq], init, randn([B, N, D], 10), (ps, i) => ({ ...scoped(ps, `layers.${i}.`), ...tied(ps) }))
    o.layers.forEach((want, i) => sameLayer(backend, layerOf(o.whole, i, 2), want, `layer ${i}`))
  })

  it("the tied bridge's gradient is the sum of every layer's", async () => {
    const rq = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, vq_bridge: linearStage(D, D) }))
    const vq = orThrow(vectorQuantize({ dim: D, codebook_size: 5, vq_bridge: linearStage(D, D) }))
    const init = rq.init(random.keyFromSeed(14))
    const r = await runOnHost(backend, [init.params, init.state, randn([B, N, D], 11)] as const, (p, s, xs) => {
      const ps = p as Named<Tensor>, ss = s as Named<Tensor>, x = xs as Tensor
      // valueAndGrad traces its function anew, so everything it reads is an argument
      const whole = valueAndGrad((pi: Named<Tensor>, si: Named<Tensor>, xi: Tensor) => {
        const res = rq.apply(pi, si, xi, { training: true })
        return res.quantized.sum().add(res.loss)
      }, 0)(ps, ss, x).grad
      const tied = Object.fromEntries(Object.entries(scoped(ps, 'layers.0.')).filter(([k]) => k.includes('vq_bridge')))
      // each layer with its own copy of the bridge; the residual carries no gradient, as in the loop
      const perLayer = valueAndGrad((t0: Named<Tensor>, t1: Named<Tensor>, pi: Named<Tensor>, si: Named<Tensor>, xi: Tensor) => {
        let res = xi
        let total: Tensor | undefined
        ;[t0, t1].forEach((t, i) => {
          const v = vq.apply({ ...scoped(pi, `layers.${i}.`), ...t }, scoped(si, `layers.${i}.`), res, { training: true })
          res = res.sub(v.quantized.stopGradient())
          const part = v.quantized.sum().add(v.loss)
          total = total ? total.add(part) : part
        })
        return total!
      }, [0, 1] as const)(tied, tied, ps, ss, x).grad
      const names = Object.keys(tied)
      return {
        whole: Object.fromEntries(names.map((k) => [k, whole[`layers.0.${k}`]!])),
        sum: Object.fromEntries(names.map((k) => [k, perLayer[0][k]!.add(perLayer[1][k]!)])),
        layer1: Object.fromEntries(names.map((k) => [k, perLayer[1][k]!])),
      }
    })
    const o = orThrow(r) as unknown as { whole: Rec; sum: Rec; layer1: Rec }
    for (const k of Object.keys(o.sum)) near(backend, o.whole[k], o.sum[k], `d/d ${k}`)
    // layer 1 contributes: the tied gradient is not layer 0's alone
    expect(Object.values(o.layer1).some((g) => Array.from(g.data).some((v) => v !== 0))).toBe(true)
  })

  it('with quantize dropout, a layer after the cut-off keeps its codebook and optimizer state', async () => {
    const rq = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, quantize_dropout: true, ...INPLACE }))
    const seed = Array.from({ length: 50 }, (_, i) => i).find((sd) => pythonRandrange(sd, 0, 2) === 0)!
    const init = rq.init(random.keyFromSeed(11))
    const r = await runOnHost(backend, [init.params, init.state, randn([B, N, D], 8)] as const, (p, s, xs) =>
      outOf(rq.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training: true, randQuantizeDropoutFixedSeed: seed })),
    )
    const o = orThrow(r) as unknown as Out
    expect(Array.from(o.indices.data).filter((_, j) => j % 2 === 1).every((v) => v === -1)).toBe(true)
    expect(Array.from(o.updatedParams['layers.1._codebook.embed']!.data)).toEqual(Array.from(init.params['layers.1._codebook.embed']!.data))
    expect(Array.from(o.updatedParams['layers.0._codebook.embed']!.data)).not.toEqual(Array.from(init.params['layers.0._codebook.embed']!.data))
    for (const k of Object.keys(init.state).filter((k) => k.startsWith('layers.1.'))) expect(Array.from(o.state[k]!.data), k).toEqual(Array.from(init.state[k]!.data))
  })

  it('target codes with an in-place optimizer: each layer steps on the projected input with its column, its codebook handed back', async () => {
    const rq = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, ...INPLACE }))
    const vq = orThrow(vectorQuantize({ dim: D, codebook_size: 5, ...INPLACE }))
    const init = rq.init(random.keyFromSeed(12))
    const targets = tensorOf(Array.from({ length: B * N * 2 }, (_, j) => (j * 3) % 5), [B, N, 2], 'int32')
    const cols = [0, 1].map((i) => tensorOf(Array.from({ length: B * N }, (_, t) => targets.data[t * 2 + i]!), [B, N], 'int32'))
    const r = await runOnHost(backend, [init.params, init.state, randn([B, N, D], 9), targets, cols[0]!, cols[1]!] as const, (p, s, xs, tg, c0, c1) => {
      const ps = p as Named<Tensor>, ss = s as Named<Tensor>
      const whole = rq.apply(ps, ss, xs as Tensor, { training: true, indices: tg as Tensor })
      const layers = [c0, c1].map((c, i) => outOf(vq.apply(scoped(ps, `layers.${i}.`), scoped(ss, `layers.${i}.`), xs as Tensor, { training: true, indices: c as Tensor })))
      return { whole: outOf(whole), layers }
    })
    const o = orThrow(r) as unknown as { whole: Out; layers: Out[] }
    o.layers.forEach((want, i) => {
      const got = layerOf(o.whole, i, 2)
      for (const k of Object.keys(want.state)) near(backend, got.state[k], want.state[k], `layer ${i} state ${k}`)
      near(backend, got.updatedParams['_codebook.embed'], want.updatedParams['_codebook.embed'], `layer ${i} updated codebook`)
      near(backend, got.losses['cross_entropy'], want.losses['cross_entropy'], `layer ${i} cross entropy`)
    })
  })

  it('a shared codebook with affine_param threads one set of statistics through every layer', async () => {
    const K = 5
    const rq = orThrow(residualVQ({ dim: D, codebook_size: K, num_quantizers: 2, shared_codebook: true, ...AFF }))
    const vq = orThrow(vectorQuantize({ dim: D, codebook_size: K, ...AFF }))
    const init = rq.init(random.keyFromSeed(9))
    const x = randn([B, N, D], 6)
    const r = await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) => {
      const ps = scoped(p as Named<Tensor>, 'layers.0.')
      const whole = rq.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training: true })
      const v0 = vq.apply(ps, scoped(s as Named<Tensor>, 'layers.0.'), xs as Tensor, { training: true, manualEmaUpdate: true })
      const v1 = vq.apply(ps, v0.state, (xs as Tensor).sub(v0.quantized), { training: true, manualEmaUpdate: true })
      return { whole: outOf(whole), v1: outOf(v1) }
    })
    const o = orThrow(r) as unknown as { whole: Out; v1: Out }
    for (const k of [...Object.values(AFFINE), '_codebook.cluster_size', '_codebook.embed_avg'])
      near(backend, o.whole.state[`layers.0.${k}`], o.v1.state[k], `shared state ${k}`)
  })
})

describe('ResidualVQ layer options: state-dict names and configs', () => {
  it('affine buffers sit under the reference names, and a torch state dict without the lazy batch statistics loads', () => {
    const g = orThrow(groupedResidualVQ({ dim: 4, groups: 2, codebook_size: 5, num_quantizers: 2, ...AFF }))
    const names = Object.keys(g.stateSpecs)
    for (const gi of [0, 1]) for (const li of [0, 1]) for (const k of Object.values(AFFINE)) expect(names).toContain(`rvqs.${gi}.layers.${li}.${k}`)
    const sd: Record<string, HostTensor> = joinStateDict(g.init(random.keyFromSeed(1)))
    // the reference registers batch_mean / batch_variance only at the first forward, and never saves Tessera's flags
    for (const k of Object.keys(sd)) if (/batch_(mean|variance)/.test(k) || k.endsWith('_needs_init') && k.includes('batch_')) delete sd[k]
    const loaded = orThrow(loadTorchStateDict(g, sd))
    expect(Array.from(loaded.state[`rvqs.1.layers.1.${AFFINE.batchMeanNeedsInit}`]!.data)).toEqual([1])
    expect(Array.from(loaded.state[`rvqs.1.layers.1.${AFFINE.codebookMeanNeedsInit}`]!.data)).toEqual([1])
  })

  it('a torch state dict of an in-place ResidualVQ (no optimizer state) loads, the optimizer state starting fresh under each layer', () => {
    const q = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, ...INPLACE }))
    const init = q.init(random.keyFromSeed(4))
    const sd = Object.fromEntries(Object.entries(joinStateDict(init)).filter(([k]) => !k.includes('in_place_codebook_optimizer.')))
    expect(Object.keys(sd)).toContain('layers.1._codebook.embed')
    const loaded = orThrow(loadTorchStateDict(q, sd))
    const opt = Object.keys(init.state).filter((k) => k.startsWith('layers.1.in_place_codebook_optimizer.'))
    expect(opt.length).toBeGreaterThan(0)
    for (const k of opt) expect(Array.from(loaded.state[k]!.data), k).toEqual(Array.from(init.state[k]!.data))
    expect(Array.from(loaded.params['layers.1._codebook.embed']!.data)).toEqual(Array.from(init.params['layers.1._codebook.embed']!.data))
  })

  it.each([
    ['sync_update_v', { learnable_codebook: true, ema_update: false, sync_update_v: 0.5 }],
    ['vq_bridge', { vq_bridge: linearStage(D, D) }],
  ])('a shared learnable codebook (%s) returns exactly its state, the codebook staying a parameter', async (_, o) => {
    const q = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, shared_codebook: true, ...o }))
    const init = q.init(random.keyFromSeed(5))
    const r = await runOnHost(cpuBackend(), [init.params, init.state, randn([B, N, D], 4)] as const, (p, s, x) => ({ ...q.apply(p as Named<Tensor>, s as Named<Tensor>, x as Tensor, { training: true }).state }))
    const st = orThrow(r) as unknown as Rec
    expect(Object.keys(st).sort()).toEqual(Object.keys(q.stateSpecs).sort())
    expect(Object.keys(q.paramSpecs)).toContain('layers.0._codebook.embed')
    expect(Object.keys(q.paramSpecs).some((k) => k.startsWith('layers.1.'))).toBe(false)
  })

  it("a torch state dict repeating the tied bridge under every layer loads when the copies agree, else a Left names the copy", () => {
    const q = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 3, vq_bridge: linearStage(D, D) }))
    const init = q.init(random.keyFromSeed(6))
    const sd: Record<string, HostTensor> = { ...joinStateDict(init) }
    for (const [k, v] of Object.entries(sd)) if (k.startsWith('layers.0._codebook.vq_bridge.')) for (const i of [1, 2]) sd[k.replace('layers.0.', `layers.${i}.`)] = v
    const loaded = orThrow(loadTorchStateDict(q, sd))
    expect(Object.keys(loaded.params).sort()).toEqual(Object.keys(q.paramSpecs).sort())
    const name = Object.keys(sd).find((k) => k.startsWith('layers.2._codebook.vq_bridge.'))!
    const bad = { ...sd, [name]: { ...sd[name]!, data: sd[name]!.data.map((v) => (v as number) + 1) as Float32Array } }
    const l = loadTorchStateDict(q, bad)
    expect(E.isLeft(l) && l.left.where).toBe(`state-dict[${name}]`)
  })

  const sgdLike = { kind: 'sgd', init: () => ({}), stateSpecs: () => ({}), update: (p: Named<Tensor>) => ({ params: { ...p }, state: {} }) }
  const bad: Record<string, readonly unknown[]> = {
    affine_param: ['x', 1, null],
    sync_affine_param: ['yes', 0],
    affine_param_batch_decay: [-0.1, 1.5, Number.NaN, 'x'],
    affine_param_codebook_decay: [-1, 2, Infinity],
    return_zeros_for_masked_padding: ['x', 0],
    commitment_use_cross_entropy_loss: [1, 'true'],
    layernorm_after_project_in: ['x'],
    sync_update_v: [-0.5, 1.5, 0.5], // 0.5 needs learnable_codebook
  }
  const where = fc.constantFrom('ResidualVQ', 'GroupedResidualVQ')
  const build = (w: string, o: Record<string, unknown>): E.Either<TesseraError, Quantizer> =>
    w === 'ResidualVQ' ? residualVQ({ dim: 4, codebook_size: 5, num_quantizers: 2, ...o }) : groupedResidualVQ({ dim: 4, groups: 2, codebook_size: 5, num_quantizers: 2, ...o })
  const fieldValue = fc.constantFrom(...Object.keys(bad)).chain((f) => fc.tuple(fc.constant(f), fc.constantFrom(...bad[f]!)))

  test.prop([where, fieldValue])('a bad layer option value is a Left naming the field', (w, [field, value]) => {
    const r = build(w, { [field]: value })
    expect(E.isLeft(r)).toBe(true)
    if (E.isLeft(r)) {
      expect(r.left.kind).toBe('config')
      expect(r.left.where.startsWith(`${w}.${field}`)).toBe(true)
    }
  })

  test.prop([where, fc.boolean(), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), fc.boolean(), fc.boolean()])(
    'good values are accepted and reach every layer',
    (w, sync, bd, cd, zeros, ce) => {
      const o = { affine_param: true, sync_affine_param: sync, affine_param_batch_decay: bd, affine_param_codebook_decay: cd, return_zeros_for_masked_padding: zeros, commitment_use_cross_entropy_loss: ce }
      const q = orThrow(build(w, o))
      const cfg = (w === 'ResidualVQ' ? q.config : (q.config as { inner: unknown }).inner) as { layers: readonly Record<string, unknown>[] }
      for (const l of cfg.layers) expect(l).toMatchObject(o)
    },
  )

  it.each([
    [{ directional_reparam: true, threshold_ema_dead_code: 1 }, 'directional_reparam', /not supported by ResidualVQ.*updatedParams/],
    [{ ...INPLACE, vq_bridge: (c: Tensor) => c }, 'vq_bridge', /in turn/],
    [{ vq_bridge: (c: Tensor) => c, beam_size: 2 }, 'vq_bridge', /beam search/],
    [{ ...INPLACE, manual_in_place_optimizer_update: true }, 'manual_in_place_optimizer_update', /updateInPlaceOptimizer/],
    [{ ...INPLACE, shared_codebook: true }, 'in_place_codebook_optimizer', /shared_codebook/],
    [{ ...INPLACE, beam_size: 2 }, 'in_place_codebook_optimizer', /beam search/],
    [{ in_place_codebook_optimizer: sgdLike, implicit_neural_codebook: true }, 'in_place_codebook_optimizer', /QINCo/],
    [{ affine_param: true, use_cosine_sim: true }, 'affine_param', /euclidean/],
    [{ affine_param: true, beam_size: 2 }, 'affine_param', /beam search/],
    [{ commitment_use_cross_entropy_loss: true, eval_beam_size: 2, beam_size: 1 }, 'commitment_use_cross_entropy_loss', /beam search/],
    [{ return_zeros_for_masked_padding: false, implicit_neural_codebook: true }, 'return_zeros_for_masked_padding', /QINCo/],
    [{ affine_param: true, implicit_neural_codebook: true }, 'affine_param', /QINCo/],
  ])('%j is refused at its field %s', (o, field, msg) => {
    for (const w of ['ResidualVQ', 'GroupedResidualVQ']) {
      const r = build(w, o)
      expect(E.isLeft(r) && r.left.where).toBe(`${w}.${field}`)
      expect(E.isLeft(r) && r.left.message).toMatch(msg)
    }
  })

  it('GroupedResidualVQ refuses the in-place optimizer by name (its combinator drops the rewritten parameters); ResidualVQ takes it', () => {
    const g = groupedResidualVQ({ dim: 4, groups: 2, codebook_size: 5, num_quantizers: 2, ...INPLACE })
    expect(E.isLeft(g) && g.left.where).toBe('GroupedResidualVQ.in_place_codebook_optimizer')
    const gb = groupedResidualVQ({ dim: 4, groups: 2, codebook_size: 5, num_quantizers: 2, vq_bridge: linearStage(2, 2) })
    expect(E.isLeft(gb) && gb.left.where).toBe('GroupedResidualVQ.vq_bridge')
    const r = orThrow(residualVQ({ dim: 4, codebook_size: 5, num_quantizers: 2, ...INPLACE }))
    expect(Object.keys(r.stateSpecs).some((k) => k.startsWith('layers.1.in_place_codebook_optimizer.'))).toBe(true)
  })

  it('a call asking for beam search with a layer option the search does not model is refused naming beamSize', async () => {
    const q = orThrow(residualVQ({ dim: D, codebook_size: 5, num_quantizers: 2, ...AFF }))
    const init: Init = q.init(random.keyFromSeed(2))
    const r = await runOnHost(cpuBackend(), [init.params, init.state, randn([B, N, D], 3)] as const, (p, s, x) =>
      q.apply(p as Named<Tensor>, s as Named<Tensor>, x as Tensor, { training: false, beamSize: 2 }).quantized,
    )
    expect(E.isLeft(r) && r.left.where).toBe('ResidualVQ.beamSize')
    expect(E.isLeft(r) && r.left.message).toMatch(/affine_param/)
  })
})

