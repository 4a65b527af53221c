import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import type { RVQApplyOptions, ResidualVQ } from '../src/residual-vq/residual-vq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import type { Init, Named } from '../src/quantizer.js'
import { compileCache, indicesToCodesOnHost, runOnHost } from '../src/run.js'
import { encodeSafetensors } from '../src/io/safetensors.js'
import { fromSafetensors } from '../src/io/torch.js'
import { gradRun } from './grad-helpers.js'
import { arr, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { comparedLanes } from './zoo.js'
import { tolerance } from './matrix-common.js'

/**
 * ResidualVQ with implicit_neural_codebook (QINCo): the MLPs' parameters under torch's names, a
 * float64 transcription of the reference's forward (layer q >= 1 picks from the codes its MLP makes
 * out of its codebook and the earlier layers' sum), codes from indices, return_all_codes, and
 * autodiff gradients against central differences.
 */

const reference = cpuBackend()

async function call(backend: Backend, q: ResidualVQ, init: Init, x: HostTensor, opts: RVQApplyOptions) {
  const r = await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) => {
    const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, opts)
    return { quantized: res.quantized, indices: res.indices, loss: res.loss, extra: { ...res.extra } }
  })
  return orThrow(r)
}

const mat = (t: HostTensor) => {
  const [o, i] = t.shape as [number, number]
  return Array.from({ length: o }, (_, r) => Array.from(t.data.slice(r * i, r * i + i)))
}
const lin = (p: Named<HostTensor>, name: string, v: readonly number[]) =>
  mat(p[`${name}.weight`]!).map((row, o) => row.reduce((s, w, i) => s + w * v[i]!, 0) + p[`${name}.bias`]!.data[o]!)
const silu = (v: number) => v / (1 + Math.exp(-v))

/** MLP i of the reference on one code and one condition, in float64. */
function hostMlp(p: Named<HostTensor>, i: number, depth: number, code: readonly number[], cond: readonly number[]): number[] {
  let h = lin(p, `mlps.${i}.proj_in`, [...cond, ...code])
  for (let j = 0; j < depth; j++) {
    const inner = lin(p, `mlps.${i}.layers.${j}.0`, h).map(silu)
    h = lin(p, `mlps.${i}.layers.${j}.2`, inner).map((v, k) => v + h[k]!)
  }
  return h
}

/** The reference's QINCo eval forward for one token: (indices, output). */
function hostQinco(p: Named<HostTensor>, nq: number, K: number, d: number, depth: number, x: readonly number[]) {
  let res = [...x], out = x.map(() => 0)
  const idx: number[] = []
  for (let l = 0; l < nq; l++) {
    const embed = Array.from({ length: K }, (_, c) => Array.from(p[`layers.${l}._codebook.embed`]!.data.slice(c * d, c * d + d)))
    const codes = l === 0 ? embed : embed.map((e) => hostMlp(p, l - 1, depth, e, out))
    // torch's pairwise_distance: |x - c + 1e-6|
    const dist = codes.map((c) => Math.sqrt(c.reduce((s, v, i) => s + (res[i]! - v + 1e-6) ** 2, 0)))
    const best = dist.indexOf(Math.min(...dist))
    idx.push(best)
    res = res.map((v, i) => v - codes[best]![i]!)
    out = out.map((v, i) => v + codes[best]![i]!)
  }
  return { idx, out }
}

describe('ResidualVQ implicit_neural_codebook (QINCo)', () => {
  it('parameters: learnable codebooks and mlps.{i} under the reference state-dict names; no EMA', () => {
    const q = orThrow(residualVQ({ dim: 6, num_quantizers: 3, codebook_size: 8, implicit_neural_codebook: true, mlp_kwargs: { dim_hidden: 5, depth: 2 } }))
    const names = Object.keys(q.paramSpecs).filter((k) => k.startsWith('mlps.')).sort()
    expect(names).toEqual(
      [0, 1].flatMap((i) => [
        `mlps.${i}.layers.0.0.bias`, `mlps.${i}.layers.0.0.weight`, `mlps.${i}.layers.0.2.bias`, `mlps.${i}.layers.0.2.weight`,
        `mlps.${i}.layers.1.0.bias`, `mlps.${i}.layers.1.0.weight`, `mlps.${i}.layers.1.2.bias`, `mlps.${i}.layers.1.2.weight`,
        `mlps.${i}.proj_in.bias`, `mlps.${i}.proj_in.weight`,
      ]).sort(),
    )
    expect(q.paramSpecs['mlps.0.proj_in.weight']!.shape).toEqual([6, 12])
    expect(q.paramSpecs['mlps.1.layers.1.0.weight']!.shape).toEqual([5, 6])
    expect(q.paramSpecs['mlps.1.layers.1.2.weight']!.shape).toEqual([6, 5])
    expect(q.paramSpecs['layers.2._codebook.embed']!.shape).toEqual([1, 8, 6])
    expect(q.config.layers.every((l) => l.learnable_codebook && !l.ema_update)).toBe(true)
  })

  test.prop([fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 999 })], { numRuns: 10 })(
    'eval forward equals a float64 transcription of the reference; codes from indices give the output back',
    async (nq, depth, seed) => {
      const d = 4, K = 6
      const q = orThrow(residualVQ({ dim: d, num_quantizers: nq, codebook_size: K, implicit_neural_codebook: true, mlp_kwargs: { depth } }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 3, d], seed + 1)
      const r = await call(reference, q, init, x, { training: false, returnAllCodes: true })
      const tokens = Array.from({ length: 6 }, (_, t) => hostQinco(init.params, nq, K, d, depth, Array.from(x.data.slice(t * d, t * d + d))))
      expect(arr(r.indices)).toEqual(tokens.flatMap((t) => t.idx))
      arr(r.quantized).forEach((v, i) => expect(v).toBeCloseTo(tokens[Math.floor(i / d)]!.out[i % d]!, 4))
      const all = r.extra['all_codes']!
      expect(all.shape).toEqual([nq, 2, 3, d])
      const sum = new Array(6 * d).fill(0)
      for (let l = 0; l < nq; l++) for (let i = 0; i < sum.length; i++) sum[i] += all.data[l * sum.length + i]!
      sum.forEach((v, i) => expect(v).toBeCloseTo(r.quantized.data[i]!, 4))
      const fromIdx = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, reference, undefined, init.state))
      arr(fromIdx).forEach((v, i) => expect(v).toBeCloseTo(r.quantized.data[i]!, 4))
    },
  )

  it('codes from coarse indices (quantize dropout): dropped layers give 0', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 6, implicit_neural_codebook: true, quantize_dropout: true }))
    const init = q.init(random.keyFromSeed(2))
    const idx = tensorOf([1, 2, -1, 0, 5, -1], [1, 2, 3], 'int32')
    const r = orThrow(await runOnHost(reference, [init.params, init.state, idx] as const, (p, s, i) => q.codesFromIndices(p as Named<Tensor>, i as Tensor, s as Named<Tensor>)))
    expect(r.shape).toEqual([3, 1, 2, 4])
    expect(arr(r).slice(16)).toEqual(new Array(8).fill(0))
    const host = hostQinco(init.params, 2, 6, 4, 4, [0, 0, 0, 0])
    expect(host.idx.length).toBe(2)
    // layer 1's code depends on layer 0's through the MLP
    const l0 = Array.from(init.params['layers.0._codebook.embed']!.data.slice(4, 8))
    const l1 = hostMlp(init.params, 0, 4, Array.from(init.params['layers.1._codebook.embed']!.data.slice(8, 12)), l0)
    arr(r).slice(8, 12).forEach((v, i) => expect(v).toBeCloseTo(l1[i]!, 4))
  })

  it("state: exactly the entries torch's state_dict() holds (beam_score_weights is not persistent)", () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6, implicit_neural_codebook: true, mlp_kwargs: { depth: 1 } }))
    const torchNames = [
      ...[0, 1].flatMap((l) => ['initted', 'cluster_size', 'embed_avg', 'embed'].map((b) => `layers.${l}._codebook.${b}`)),
      'mlps.0.proj_in.weight', 'mlps.0.proj_in.bias', 'mlps.0.layers.0.0.weight', 'mlps.0.layers.0.0.bias', 'mlps.0.layers.0.2.weight', 'mlps.0.layers.0.2.bias',
    ]
    expect([...Object.keys(q.paramSpecs), ...Object.keys(q.stateSpecs)].sort()).toEqual(torchNames.sort())
  })

  it('loads a torch state dict with the MLPs (fromSafetensors), outputs unchanged', async () => {
    const kwargs = { dim: 4, num_quantizers: 2, codebook_size: 6, implicit_neural_codebook: true, mlp_kwargs: { depth: 1 } }
    const q = orThrow(residualVQ(kwargs))
    const init = q.init(random.keyFromSeed(5))
    const file = encodeSafetensors({ ...init.params, ...init.state }, { 'tessera.class': 'ResidualVQ', 'tessera.kwargs': JSON.stringify(kwargs) })
    const loaded = orThrow(fromSafetensors(file))
    const x = randn([1, 4, 4], 6)
    const a = await call(reference, q, init, x, { training: false })
    const b = await call(reference, loaded.quantizer as ResidualVQ, { params: loaded.params, state: loaded.state }, x, { training: false })
    expect(arr(b.indices)).toEqual(arr(a.indices))
    expect(arr(b.quantized)).toEqual(arr(a.quantized))
  })

  it('config: QINCo refuses cosine similarity and a shared codebook, naming implicit_neural_codebook', () => {
    for (const extra of [{ use_cosine_sim: true }, { shared_codebook: true }]) {
      const r = residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6, implicit_neural_codebook: true, ...extra })
      expect(r._tag === 'Left' && r.left.where).toBe('ResidualVQ.implicit_neural_codebook')
    }
  })

  it('beam search with QINCo: every beam conditions its MLP on its own path; width 1 is the greedy QINCo loop', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 6, implicit_neural_codebook: true, beam_size: 3, mlp_kwargs: { depth: 1 } }))
    const init = q.init(random.keyFromSeed(8))
    const x = randn([2, 5, 4], 8)
    const beam = await call(reference, q, init, x, { training: true, returnAllCodes: true })
    const greedy = await call(reference, q, init, x, { training: true, beamSize: 1 })
    const hostGreedy = Array.from({ length: 10 }, (_, t) => hostQinco(init.params, 3, 6, 4, 1, Array.from(x.data.slice(t * 4, t * 4 + 4))))
    expect(arr(greedy.indices)).toEqual(hostGreedy.flatMap((t) => t.idx))
    // the beam's codes from indices are its output (each path's codebooks follow its own codes)
    const all = beam.extra['all_codes']!
    for (let i = 0; i < 40; i++) expect(all.data[i]! + all.data[40 + i]! + all.data[80 + i]!).toBeCloseTo(beam.quantized.data[i]!, 4)
  })
})

describe('QINCo gradients: autodiff against central differences', () => {
  // Without gradient routing the output is the selected codes themselves, so while the codes stay
  // the same the output is a smooth function of every MLP weight and codebook. The layers' inputs
  // are residuals with the earlier codes detached (the reference's quant_grad_frac 0), so the loss is
  // checked only where no detached path exists: the last MLP, the last codebook and x.
  const q = orThrow(residualVQ({ dim: 3, num_quantizers: 3, codebook_size: 5, implicit_neural_codebook: true, route_gradients_to_input: false, mlp_kwargs: { depth: 2, dim_hidden: 4 } }))
  const init = q.init(random.keyFromSeed(11))
  const x = randn([1, 4, 3], 12)
  const w = randn([1, 4, 3], 13)
  const objectives = {
    'w·quantized': {
      f: (r: { loss: Tensor; quantized: Tensor }, wt: Tensor) => r.quantized.mul(wt).sum(),
      names: ['mlps.0.proj_in.weight', 'mlps.0.layers.1.0.weight', 'mlps.0.layers.1.2.bias', 'mlps.1.layers.0.2.weight', 'mlps.1.proj_in.bias', 'layers.0._codebook.embed', 'layers.1._codebook.embed', 'layers.2._codebook.embed'],
      xs: [] as number[],
    },
    loss: {
      f: (r: { loss: Tensor; quantized: Tensor }) => r.loss,
      names: ['mlps.1.proj_in.weight', 'mlps.1.layers.1.0.weight', 'mlps.1.layers.0.2.bias', 'layers.2._codebook.embed'],
      xs: [0, 5, 11],
    },
  }
  for (const [label, o] of Object.entries(objectives))
    it(`d(${label}) / d(MLP weights, codebooks${o.xs.length ? ', x' : ''})`, async () => {
      const g = await gradRun(reference, q, init, x, w, { training: true, objective: o.f })
      const cache = compileCache()
      const value = async (params: Named<HostTensor>, xs: HostTensor) => {
        const r = orThrow(await runOnHost(reference, [params, init.state, xs, w] as const, (p, s, xx, ww) => {
          const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xx as Tensor, { training: true })
          return { obj: o.f(res, ww as Tensor), indices: res.indices }
        }, cache))
        return { obj: r.obj.data[0]!, indices: arr(r.indices).join(',') }
      }
      const base = await value(init.params, x)
      expect(base.indices).toBe(arr(g.indices).join(','))
      const h = 1e-2
      let checked = 0, nonzero = 0
      const probe = async (grad: number, at: (delta: number) => Promise<{ obj: number; indices: string }>, what: string) => {
        const up = await at(h), down = await at(-h)
        if (up.indices !== base.indices || down.indices !== base.indices) return // a code changed: not differentiable here
        const numeric = (up.obj - down.obj) / (2 * h)
        expect(Math.abs(grad - numeric), `${what}: autodiff ${grad}, numeric ${numeric}`).toBeLessThanOrEqual(2e-2 * Math.max(1, Math.abs(numeric)))
        checked++
        if (Math.abs(numeric) > 1e-3) nonzero++
      }
      for (const name of o.names) {
        const t = init.params[name]!
        for (const i of [0, Math.floor(t.data.length / 2), t.data.length - 1]) {
          const at = (delta: number) => {
            const data = Float32Array.from(t.data)
            data[i] = data[i]! + delta
            return value({ ...init.params, [name]: { ...t, data } }, x)
          }
          await probe(g.gparams[name]!.data[i]!, at, `${name}[${i}]`)
        }
      }
      for (const i of o.xs) {
        const at = (delta: number) => {
          const data = Float32Array.from(x.data)
          data[i] = data[i]! + delta
          return value(init.params, { ...x, data })
        }
        await probe(g.gx.data[i]!, at, `x[${i}]`)
      }
      cache.dispose()
      expect(checked).toBeGreaterThanOrEqual(Math.floor(0.75 * (3 * o.names.length + o.xs.length)))
      expect(nonzero).toBeGreaterThan(checked / 2)
    })
})

const lanes = comparedLanes

describeLanes('rvq-qinco', lanes, (lane) => `ResidualVQ QINCo on ${lane.name}`, (backend) => {
  for (const training of [false, true])
    it(`${training ? 'training' : 'eval'}: indices exact, output and all_codes within the backend's tolerance`, async () => {
      const q = orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: 8, implicit_neural_codebook: true, mlp_kwargs: { depth: 2 } }))
      const init = q.init(random.keyFromSeed(31))
      const x = randn([2, 5, 4], 32)
      const want = await call(reference, q, init, x, { training, returnAllCodes: true })
      const got = await call(backend, q, init, x, { training, returnAllCodes: true })
      expect(arr(got.indices)).toEqual(arr(want.indices))
      for (const [name, a, b] of [['quantized', got.quantized, want.quantized], ['all_codes', got.extra['all_codes']!, want.extra['all_codes']!], ['loss', got.loss, want.loss]] as const)
        arr(a).forEach((v, i) => expect(Math.abs(v - b.data[i]!), name).toBeLessThanOrEqual(tolerance(backend.caps, b.data[i]!)))
    })
})
