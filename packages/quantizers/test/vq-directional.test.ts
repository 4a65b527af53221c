import { expect, it } from 'vitest'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf, valueAndGrad } from '@tessera/core'
import type { Init, Named } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { dot, norm } from './grad-helpers.js'
import { arr, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { tolerance } from './matrix-common.js'
import { lanes, near, rowsOf, vqRun } from './vq-reparam-helpers.js'

/**
 * DiVeQ (directional_reparam) and sync_update_v: the forward value is x + dir·||q − x|| (the code
 * itself with variance 0), no commitment loss, and the gradients of sum(w·out) are the reference's
 * (dir held constant), checked against float64 formulas with dir read back from the output.
 */

const D = 4, K = 8
const diveq = (o: Record<string, unknown> = {}) => orThrow(vectorQuantize({ dim: D, codebook_size: K, directional_reparam: true, threshold_ema_dead_code: 2, ...o }))
const KEY = [5, 9] as const

const tol = (backend: Backend) => (w: number) => Math.max(5e-5 * Math.max(1, Math.abs(w)), 4 * tolerance(backend.caps, w))

/** quantized, indices and the gradients of sum(w·quantized) w.r.t. x and the codebook, in one program. */
async function gradCall(backend: Backend, q: VectorQuantize, init: Init, x: HostTensor, w: HostTensor) {
  const k = tensorOf([...KEY], [2], 'int32')
  const r = await runOnHost(backend, [init.params, init.state, x, w, k] as const, (p, s, xs, ws, kk) => {
    const f = (xi: Tensor, pi: Named<Tensor>, si: Named<Tensor>, wi: Tensor, ki: Tensor) => {
      const res = q.apply(pi, si, xi, { training: true, key: ki })
      return { loss: res.quantized.mul(wi).sum(), quantized: res.quantized, indices: res.indices }
    }
    const { value, grad } = valueAndGrad(f, [0, 1] as const)(xs as Tensor, p as Named<Tensor>, s as Named<Tensor>, ws as Tensor, kk as Tensor)
    return { quantized: value.quantized, indices: value.indices, gx: grad[0], ge: grad[1]['_codebook.embed']! }
  })
  return orThrow(r) as unknown as { quantized: HostTensor; indices: HostTensor; gx: HostTensor; ge: HostTensor }
}

/** The reference's gradients for one row: dir u (constant), err = q − x: d/dx = w − (u·w)·err/|err|, d/dq = (u·w)·err/|err|. */
function hostGrads(x: number[][], out: number[][], codes: number[][], ind: number[], w: number[][], scale: number) {
  const gx: number[] = [], ge = codes.map((c) => c.map(() => 0))
  x.forEach((xi, i) => {
    const q = codes[ind[i]!]!
    const err = q.map((v, j) => v - xi[j]!)
    const n = norm(err)
    const u = out[i]!.map((v, j) => (v - xi[j]!) / n)
    const uw = dot(u, w[i]!)
    gx.push(...w[i]!.map((wj, j) => scale * (wj - (uw * err[j]!) / n)))
    err.forEach((e, j) => (ge[ind[i]!]![j] += (scale * uw * e) / n))
  })
  return { gx, ge: ge.flat() }
}

describeLanes('vq-directional', lanes, (lane) => `VectorQuantize directional_reparam on ${lane.name}`, (backend) => {
  const x = randn([2, 6, D], 21)
  const w = randn([2, 6, D], 22)

  it('variance 0: the values of plain VQ (the code itself), no commitment loss; dead codes revived into updatedParams', async () => {
    const q = diveq({ directional_reparam_variance: 0 })
    expect(q.config.learnable_codebook && !q.config.ema_update && !q.config.rotation_trick).toBe(true)
    const plain = orThrow(vectorQuantize({ dim: D, codebook_size: K, learnable_codebook: true, ema_update: false, rotation_trick: false, threshold_ema_dead_code: 2 }))
    const init = q.init(random.keyFromSeed(23))
    const a = await vqRun(backend, q, init, x, { training: true, key: KEY })
    const b = await vqRun(backend, plain, init, x, { training: true, key: KEY })
    expect(arr(a.indices)).toEqual(arr(b.indices))
    near(a.quantized.data, arr(b.quantized), tol(backend), 'quantized')
    expect(arr(a.losses['commitment']!)).toEqual([0])
    expect(arr(a.loss)).toEqual([0])
    expect(b.losses['commitment']!.data[0]).toBeGreaterThan(0)
    // every code had cluster size 1 < 2: all are revived from batch rows, handed back as the new codebook
    expect(arr(a.updatedParams['_codebook.embed']!)).toEqual(arr(b.updatedParams['_codebook.embed']!))
    const batchRows = rowsOf(x, D).map((r) => r.map(Math.fround).join(','))
    for (const code of rowsOf(a.updatedParams['_codebook.embed']!, D)) expect(batchRows).toContain(code.join(','))
  })

  it('variance > 0: each output keeps the true error magnitude |q − x| with a noised direction, keyed; without input gradients the output is the code', async () => {
    const q = diveq({ directional_reparam_variance: 0.5 })
    const init = q.init(random.keyFromSeed(24))
    const a = await vqRun(backend, q, init, x, { training: true, key: KEY })
    const again = await vqRun(backend, q, init, x, { training: true, key: KEY })
    const other = await vqRun(backend, q, init, x, { training: true, key: [6, 9] })
    const codes = rowsOf(init.params['_codebook.embed']!, D)
    const xs = rowsOf(x, D), outs = rowsOf(a.quantized, D)
    let moved = 0
    xs.forEach((xi, i) => {
      const c = codes[a.indices.data[i]!]!
      const errNorm = norm(c.map((v, j) => v - xi[j]!))
      near([norm(outs[i]!.map((v, j) => v - xi[j]!))], [errNorm], tol(backend), `row ${i} error magnitude`)
      moved = Math.max(moved, norm(outs[i]!.map((v, j) => v - c[j]!)))
    })
    expect(moved).toBeGreaterThan(1e-2)
    expect(arr(again.quantized)).toEqual(arr(a.quantized))
    expect(arr(other.quantized)).not.toEqual(arr(a.quantized))
    const plainOut = await vqRun(backend, q, init, x, { training: true, key: KEY, inputRequiresGrad: false })
    expect(arr(plainOut.quantized)).toEqual(arr(a.indices).flatMap((k) => codes[k]!.map(Math.fround)))
  })

  for (const [variance, v] of [[0, 0], [0.5, 0], [0.5, 0.5]] as const)
    it(`gradients (variance ${variance}, sync_update_v ${v}): d/dx = w − (u·w)·err/|err|, d/d code = (u·w)·err/|err|, times 1 + v`, async () => {
      const q = diveq({ directional_reparam_variance: variance, sync_update_v: v })
      const init = q.init(random.keyFromSeed(25))
      const r = await gradCall(backend, q, init, x, w)
      const want = hostGrads(rowsOf(x, D), rowsOf(r.quantized, D), rowsOf(init.params['_codebook.embed']!, D), arr(r.indices), rowsOf(w, D), 1 + v)
      near(r.gx.data, want.gx, tol(backend), 'd/dx')
      near(r.ge.data, want.ge, tol(backend), 'd/d codebook')
    })

  it('sync_update_v with the straight-through estimator: same value, input gradient scaled by 1 + v', async () => {
    const base = { dim: D, codebook_size: K, learnable_codebook: true, ema_update: false, rotation_trick: false }
    const init = orThrow(vectorQuantize(base)).init(random.keyFromSeed(26))
    const plain = await gradCall(backend, orThrow(vectorQuantize(base)), init, x, w)
    const synced = await gradCall(backend, orThrow(vectorQuantize({ ...base, sync_update_v: 0.25 })), init, x, w)
    expect(arr(synced.quantized)).toEqual(arr(plain.quantized))
    near(synced.gx.data, arr(plain.gx).map((g) => 1.25 * g), tol(backend), 'd/dx')
    expect(arr(plain.gx)).toEqual(arr(w))
  })
})
