import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { random } from '@tessera/core'
import { simVQ, decodeSimVQ } from '../src/simvq/simvq.js'
import { residualSimVQ } from '../src/simvq/residual-simvq.js'
import { randomProjectionQuantizer } from '../src/random-projection/random-projection.js'
import { applyOnHost, indicesToCodesOnHost, runOnHost } from '../src/run.js'
import type { Named } from '../src/quantizer.js'
import { arr, backends, orThrow, randn, snapshot } from './helpers.js'

const backend = backends[0]!

describe('SimVQ', () => {
  test.prop([fc.integer({ min: 0, max: 999 }), fc.boolean()], { numRuns: 15 })(
    'outputs are rows of the implicit codebook code_transform(frozen), nearest, and indicesToCodes == quantized',
    async (seed, channelFirst) => {
      const q = orThrow(simVQ({ dim: 4, codebook_size: 7, frozen_codebook_dim: 3, channel_first: channelFirst }))
      const init = q.init(random.keyFromSeed(seed))
      const shape = channelFirst ? [2, 4, 3] : [2, 3, 4]
      const x = randn(shape, seed + 1)
      const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x }, backend))
      expect(r.quantized.shape).toEqual(shape)
      expect(r.indices.shape).toEqual([2, 3])
      const cb = orThrow(await runOnHost(backend, [init.params, init.state] as const, (p, s) => q.codebook(p as Named<Tensor>, s as Named<Tensor>)))
      const codes = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, backend, undefined, init.state))
      expect(arr(codes)).toEqual(arr(r.quantized))
      const xl = channelFirst ? [0, 1].flatMap((b) => [0, 1, 2].flatMap((n) => [0, 1, 2, 3].map((d) => x.data[b * 12 + d * 3 + n]!))) : arr(x)
      for (let t = 0; t < 6; t++) {
        const dist = (k: number) => [0, 1, 2, 3].reduce((a, j) => a + (xl[t * 4 + j]! - cb.data[k * 4 + j]!) ** 2, 0)
        const idx = r.indices.data[t]!
        for (let k = 0; k < 7; k++) expect(dist(k)).toBeGreaterThanOrEqual(dist(idx) - 1e-5)
      }
      // commitment (1 + 0.25) · mse, computed in every mode as in the reference
      const mse = [...Array(6).keys()].reduce((a, t) => a + [0, 1, 2, 3].reduce((s, j) => s + (xl[t * 4 + j]! - cb.data[r.indices.data[t]! * 4 + j]!) ** 2, 0), 0) / 24
      expect(r.loss.data[0]).toBeCloseTo(1.25 * mse, 5)
    },
  )

  it('training keeps the forward value (rotation trick) and the state', async () => {
    const q = orThrow(simVQ({ dim: 4, codebook_size: 7 }))
    const init = q.init(random.keyFromSeed(1))
    const x = randn([2, 3, 4], 2)
    const ev = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x }, backend))
    const tr = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x, training: true }, backend))
    arr(tr.quantized).forEach((v, i) => expect(Math.abs(v - ev.quantized.data[i]!)).toBeLessThan(1e-5))
    expect(snapshot(tr.state)).toEqual(snapshot(init.state))
  })

  it('config Lefts name the field', () => {
    const r = decodeSimVQ({ dim: 4, codebook_size: 7, codebook_transform: 'mlp' })
    expect(E.isLeft(r) && r.left.where).toBe('SimVQ.codebook_transform')
    const r2 = decodeSimVQ({ dim: 0, codebook_size: 7 })
    expect(E.isLeft(r2) && r2.left.where).toBe('SimVQ.dim')
  })
})

describe('ResidualSimVQ', () => {
  it.each([false, true])('channel_first %s: outputs sum to the reconstruction from indices', async (cf) => {
    const q = orThrow(residualSimVQ({ dim: 4, num_quantizers: 3, codebook_size: 6, channel_first: cf }))
    const init = q.init(random.keyFromSeed(3))
    const shape = cf ? [2, 4, 5] : [2, 5, 4]
    const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x: randn(shape, 4) }, backend))
    expect(r.quantized.shape).toEqual(shape)
    expect(r.indices.shape).toEqual([2, 5, 3])
    const out = orThrow(await indicesToCodesOnHost(q, init.params, r.indices, backend, undefined, init.state))
    expect(out.shape).toEqual(shape)
    arr(out).forEach((v, i) => expect(Math.abs(v - r.quantized.data[i]!)).toBeLessThan(1e-5))
    expect(r.extra['all_losses']!.shape).toEqual([3])
  })
})

describe('RandomProjectionQuantizer', () => {
  it('indices per codebook, deterministic, state unchanged even in training', async () => {
    const q = orThrow(randomProjectionQuantizer({ dim: 6, codebook_size: 8, codebook_dim: 3, num_codebooks: 2 }))
    const init = q.init(random.keyFromSeed(5))
    const x = randn([2, 4, 6], 6)
    const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x, training: true }, backend))
    expect(r.indices.shape).toEqual([2, 4, 2])
    expect(snapshot(r.state)).toEqual(snapshot(init.state))
    // invariant to an affine change of each token (the layer norm removes it)
    const x2 = { ...x, data: x.data.map((v) => v * 3 + 1) }
    const r2 = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x: x2 }, backend))
    expect(arr(r2.indices)).toEqual(arr(r.indices))
  })

  it('keeps the k-means init of its inner VectorQuantize (initted, codebook), as the reference does', async () => {
    const q = orThrow(randomProjectionQuantizer({ dim: 6, codebook_size: 4, codebook_dim: 3, kmeans_init: true, kmeans_iters: 3 }))
    const init = q.init(random.keyFromSeed(7))
    expect(arr(init.state['vq._codebook.initted']!)).toEqual([0])
    const x = randn([2, 8, 6], 8)
    const key = { shape: [2], dtype: 'int32' as const, data: Int32Array.from(random.keyFromSeed(9)) }
    const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x, key }, backend))
    expect(arr(r.state['vq._codebook.initted']!)).toEqual([1])
    expect(arr(r.state['vq._codebook.embed']!)).not.toEqual(arr(init.state['vq._codebook.embed']!))
    expect(arr(r.state['rand_projs']!)).toEqual(arr(init.state['rand_projs']!))
  })
})
