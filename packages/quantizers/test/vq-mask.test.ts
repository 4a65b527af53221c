import { expect, it } from 'vitest'
import { fc } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'
import { arr, orThrow, randn } from './helpers.js'
import { maskOf, maxDiff, vqCall, vqCallOk } from './vq-call.js'

const build = (o: Record<string, unknown>): VectorQuantize => orThrow(vectorQuantize(o))
const b = 2, n = 5, d = 4, K = 6

/** x with the masked-out tokens replaced by other values */
function perturbMasked(x: HostTensor, mask: HostTensor, seed: number): HostTensor {
  const noise = randn(x.shape, seed, 10)
  const data = Float32Array.from(x.data)
  for (let t = 0; t < b * n; t++) if (!mask.data[t]) for (let j = 0; j < d; j++) data[t * d + j] = noise.data[t * d + j]!
  return tensorOf(data, x.shape)
}

const masks = fc.array(fc.array(fc.boolean(), { minLength: n, maxLength: n }), { minLength: b, maxLength: b }).map((rows) => {
  rows[0]![0] = true // at least one kept token, so every loss is a number
  return maskOf(rows.map((r) => r.map(Number)))
})

describeLanes('vq-mask', nodeLanes, (lane) => `VectorQuantize mask and lens on ${lane.name}`, (backend) => {
  const configs: [string, Record<string, unknown>][] = [
    ['euclidean EMA', {}],
    ['cosine EMA with dead codes', { use_cosine_sim: true, threshold_ema_dead_code: 0.9 }],
    ['k-means init', { kmeans_init: true, kmeans_iters: 2 }],
    ['shared heads, cross-entropy commitment', { heads: 2, codebook_dim: 2, commitment_use_cross_entropy_loss: true }],
    ['separate heads with dead codes, cross-entropy commitment', { heads: 2, codebook_dim: 2, separate_codebook_per_head: true, threshold_ema_dead_code: 0.9, commitment_use_cross_entropy_loss: true }],
  ]

  it.each(configs)('%s: a mask that keeps every token equals no mask (eval and a training step)', async (_n, cfg) => {
    const q = build({ dim: d, codebook_size: K, ...cfg })
    const init = q.init(random.keyFromSeed(3))
    const x = randn([b, n, d], 4)
    const all = maskOf(Array.from({ length: b }, () => Array(n).fill(1)))
    for (const training of [false, true]) {
      const plain = await vqCallOk(backend, q, init, x, { training, key: [1, 2] })
      const masked = await vqCallOk(backend, q, init, x, { training, key: [1, 2], tensors: { m: all }, opts: (t) => ({ mask: t['m']! }) })
      expect(arr(masked.indices)).toEqual(arr(plain.indices))
      expect(maxDiff(masked.quantized.data, plain.quantized.data)).toBeLessThanOrEqual(1e-6)
      for (const k of Object.keys(plain.state)) expect(maxDiff(masked.state[k]!.data, plain.state[k]!.data), k).toBeLessThanOrEqual(1e-5)
      // cosine: the masked commitment compares with the raw input, not the normalized one
      if (!cfg['use_cosine_sim']) expect(Math.abs(masked.loss.data[0]! - plain.loss.data[0]!)).toBeLessThanOrEqual(1e-6)
    }
  })

  it.each(configs)('%s: masked-out tokens change nothing but their own outputs (zeros, -1)', async (_n, cfg) => {
    const q = build({ dim: d, codebook_size: K, ...cfg })
    await fc.assert(
      fc.asyncProperty(masks, fc.integer({ min: 1, max: 1000 }), async (mask, seed) => {
        const init = q.init(random.keyFromSeed(seed))
        const x = randn([b, n, d], seed + 1)
        const y = perturbMasked(x, mask, seed + 2)
        const opts = { training: true, key: [5, 6] as const, tensors: { m: mask }, opts: (t: Record<string, import('@tessera/core').Tensor>) => ({ mask: t['m']! }) }
        const rx = await vqCallOk(backend, q, init, x, opts)
        const ry = await vqCallOk(backend, q, init, y, opts)
        for (const k of Object.keys(rx.state)) expect(arr(ry.state[k]!), k).toEqual(arr(rx.state[k]!))
        expect(arr(ry.loss)).toEqual(arr(rx.loss))
        for (const k of Object.keys(rx.losses)) expect(arr(ry.losses[k]!), k).toEqual(arr(rx.losses[k]!))
        const h = rx.indices.data.length / (b * n) // heads
        for (let t = 0; t < b * n; t++) {
          const kept = mask.data[t] === 1
          for (let i = t * h; i < (t + 1) * h; i++) {
            if (kept) expect(ry.indices.data[i]).toBe(rx.indices.data[i])
            else expect(rx.indices.data[i]).toBe(-1)
          }
          for (let j = 0; j < d; j++) if (!kept) expect(rx.quantized.data[t * d + j]).toBe(0)
        }
      }),
      { numRuns: 3 },
    )
  })

  it('without return_zeros_for_masked_padding masked-out tokens return the input', async () => {
    const q = build({ dim: d, codebook_size: K, return_zeros_for_masked_padding: false })
    const init = q.init(random.keyFromSeed(8))
    const x = randn([b, n, d], 9)
    const mask = maskOf([[1, 1, 0, 1, 0], [0, 1, 1, 1, 1]])
    const r = await vqCallOk(backend, q, init, x, { tensors: { m: mask }, opts: (t) => ({ mask: t['m']! }) })
    const embed = init.state['_codebook.embed']!.data
    for (let t = 0; t < b * n; t++)
      for (let j = 0; j < d; j++) {
        const want = mask.data[t] ? embed[r.indices.data[t]! * d + j]! : x.data[t * d + j]!
        expect(r.quantized.data[t * d + j]).toBe(want)
      }
  })

  it('the masked commitment loss is the mean over kept tokens of (code - raw input)^2', async () => {
    const q = build({ dim: d, codebook_size: K, use_cosine_sim: true })
    const init = q.init(random.keyFromSeed(10))
    const x = randn([b, n, d], 11)
    const mask = maskOf([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1]])
    const r = await vqCallOk(backend, q, init, x, { training: true, tensors: { m: mask }, opts: (t) => ({ mask: t['m']!, freezeCodebook: true }) })
    const embed = init.state['_codebook.embed']!.data
    let s = 0, m = 0
    for (let t = 0; t < b * n; t++) {
      if (!mask.data[t]) continue
      m++
      for (let j = 0; j < d; j++) s += (embed[r.indices.data[t]! * d + j]! - x.data[t * d + j]!) ** 2
    }
    expect(Math.abs(r.losses['commitment']!.data[0]! - s / (m * d))).toBeLessThanOrEqual(1e-5)
  })

  it('lens equals the mask it stands for', async () => {
    const q = build({ dim: d, codebook_size: K })
    const init = q.init(random.keyFromSeed(12))
    const x = randn([b, n, d], 13)
    const lens = tensorOf([3, 5], [2], 'int32')
    const mask = maskOf([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    const byLens = await vqCallOk(backend, q, init, x, { training: true, tensors: { l: lens }, opts: (t) => ({ lens: t['l']! }) })
    const byMask = await vqCallOk(backend, q, init, x, { training: true, tensors: { m: mask }, opts: (t) => ({ mask: t['m']! }) })
    expect(arr(byLens.indices)).toEqual(arr(byMask.indices))
    expect(arr(byLens.quantized)).toEqual(arr(byMask.quantized))
    expect(arr(byLens.loss)).toEqual(arr(byMask.loss))
    for (const k of Object.keys(byMask.state)) expect(arr(byLens.state[k]!), k).toEqual(arr(byMask.state[k]!))
  })

  it('bad mask and lens arguments are Lefts naming the argument', async () => {
    const q = build({ dim: d, codebook_size: K })
    const init = q.init(random.keyFromSeed(1))
    const x = randn([b, n, d], 2)
    const cases: [string, Record<string, HostTensor>, (t: Record<string, import('@tessera/core').Tensor>) => object, string][] = [
      ['mask of the wrong shape', { m: maskOf([[1, 1, 1, 1]]) }, (t) => ({ mask: t['m'] }), 'VectorQuantize.mask'],
      ['float mask', { m: tensorOf(new Float32Array(b * n), [b, n]) }, (t) => ({ mask: t['m'] }), 'VectorQuantize.mask'],
      ['float lens', { l: tensorOf([1, 2], [2]) }, (t) => ({ lens: t['l'] }), 'VectorQuantize.lens'],
      ['lens of the wrong length', { l: tensorOf([1, 2, 3], [3], 'int32') }, (t) => ({ lens: t['l'] }), 'VectorQuantize.lens'],
      ['mask and lens', { m: maskOf([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]), l: tensorOf([1, 2], [2], 'int32') }, (t) => ({ mask: t['m'], lens: t['l'] }), 'VectorQuantize.lens'],
    ]
    for (const [what, tensors, opts, where] of cases) {
      const r = await vqCall(backend, q, init, x, { tensors, opts: opts as never })
      expect(E.isLeft(r), what).toBe(true)
      if (E.isLeft(r)) expect(r.left.where, what).toBe(where)
    }
    // the reference defines a mask for channel-last sequences only, and its masked commitment loss without projections
    const cf = build({ dim: d, codebook_size: K, channel_last: false })
    const rc = await vqCall(backend, cf, cf.init(random.keyFromSeed(1)), randn([b, d, n], 2), { tensors: { m: maskOf([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]) }, opts: (t) => ({ mask: t['m']! }) })
    expect(E.isLeft(rc) && rc.left.where).toBe('VectorQuantize.mask')
    const pj = build({ dim: d, codebook_size: K, codebook_dim: 3 })
    const rp = await vqCall(backend, pj, pj.init(random.keyFromSeed(1)), x, { training: true, tensors: { m: maskOf([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]) }, opts: (t) => ({ mask: t['m']! }) })
    expect(E.isLeft(rp) && rp.left.where).toBe('VectorQuantize.mask')
  })
})
