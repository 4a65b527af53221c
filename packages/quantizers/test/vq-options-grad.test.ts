import { expect, it } from 'vitest'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random, valueAndGrad } from '@tessera/core'
import type { Init, Named } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import type { VQCallOptions, VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'
import { orThrow, randn } from './helpers.js'
import { maskOf } from './vq-call.js'

const build = (o: Record<string, unknown>): VectorQuantize => orThrow(vectorQuantize(o))
const b = 2, n = 4, d = 3, K = 5

/** The gradient w.r.t. x of sum(w · quantized) + loss, in training, with the given forward options. */
async function gradOfX(backend: Backend, q: VectorQuantize, init: Init, x: HostTensor, w: HostTensor, tensors: Named<HostTensor>, opts: (t: Named<Tensor>) => Partial<VQCallOptions>, lossOnly = false) {
  const r = await runOnHost(backend, [init.params, init.state, x, w, tensors] as const, (p, s, xx, ww, tt) => {
    // everything the function reads is an argument: valueAndGrad traces it on its own
    const f = (xi: Tensor, pi: Named<Tensor>, si: Named<Tensor>, wi: Tensor, ti: Named<Tensor>) => {
      const res = q.apply(pi, si, xi, { training: true, ...opts(ti) })
      return lossOnly ? res.loss : res.quantized.mul(wi).sum().add(res.loss)
    }
    const args = [xx as Tensor, p as Named<Tensor>, s as Named<Tensor>, ww as Tensor, tt as Named<Tensor>] as const
    const { value, grad } = valueAndGrad(f, [0] as const)(...args)
    if (!lossOnly) return { value, gx: grad[0] }
    const side = q.apply(p as Named<Tensor>, s as Named<Tensor>, xx as Tensor, { training: true, ...opts(tt as Named<Tensor>) })
    return { value, gx: grad[0], indices: side.indices }
  })
  return orThrow(r) as unknown as { value: HostTensor; gx: HostTensor; indices: HostTensor }
}

describeLanes('vq-options-grad', nodeLanes, (lane) => `VectorQuantize forward option gradients on ${lane.name}`, (backend) => {
  it('a masked-out token gets no gradient: its output is blanked and no loss reads it', async () => {
    for (const cfg of [{}, { rotation_trick: false }, { commitment_use_cross_entropy_loss: true }]) {
      const q = build({ dim: d, codebook_size: K, ...cfg })
      const init = q.init(random.keyFromSeed(2))
      const x = randn([b, n, d], 3), w = randn([b, n, d], 4)
      const mask = maskOf([[1, 0, 1, 1], [0, 1, 0, 1]])
      const g = await gradOfX(backend, q, init, x, w, { m: mask }, (t) => ({ mask: t['m']!, freezeCodebook: true }))
      for (let t = 0; t < b * n; t++) {
        const row = Array.from(g.gx.data.subarray(t * d, (t + 1) * d))
        if (!mask.data[t]) expect(row, JSON.stringify(cfg)).toEqual([0, 0, 0])
        else expect(row.some((v) => v !== 0) && row.every(Number.isFinite), JSON.stringify(cfg)).toBe(true)
      }
    }
  })

  it('the cross-entropy commitment loss has the float64 gradient of mean(logsumexp(-|x - e|) + |x - e_t|)', async () => {
    const q = build({ dim: d, codebook_size: K, commitment_use_cross_entropy_loss: true })
    const init = q.init(random.keyFromSeed(5))
    const x = randn([b, n, d], 6)
    const g = await gradOfX(backend, q, init, x, randn([b, n, d], 7), {}, () => ({ freezeCodebook: true }), true)
    const e = init.state['_codebook.embed']!.data
    const N = b * n
    for (let t = 0; t < N; t++) {
      const xt = Array.from(x.data.subarray(t * d, (t + 1) * d))
      const diff = Array.from({ length: K }, (_, k) => xt.map((v, j) => v - e[k * d + j]!))
      const dist = diff.map((v) => Math.sqrt(Math.max(v.reduce((s, u) => s + u * u, 0), 1e-8)))
      const logits = dist.map((v) => -v)
      const mx = Math.max(...logits)
      const p = logits.map((l) => Math.exp(l - mx))
      const z = p.reduce((a, v) => a + v, 0)
      const tgt = g.indices.data[t]!
      for (let j = 0; j < d; j++) {
        // d logit_k / dx_j = -(x_j - e_kj) / dist_k; d/dx (lse - logit_t) = sum_k p_k dl_k - dl_t
        const dl = (k: number) => -diff[k]![j]! / dist[k]!
        let want = -dl(tgt)
        for (let k = 0; k < K; k++) want += (p[k]! / z) * dl(k)
        expect(Math.abs(g.gx.data[t * d + j]! - want / N)).toBeLessThanOrEqual(2e-5)
      }
    }
  })
})
