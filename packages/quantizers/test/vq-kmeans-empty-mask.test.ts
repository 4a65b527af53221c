import { expect, it } from 'vitest'
import { fc } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import type { Init, Named } from '../src/quantizer.js'
import { applyOnHost, runOnHost } from '../src/run.js'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'
import { arr, orThrow, randn } from './helpers.js'
import { maskOf } from './vq-call.js'

/**
 * `kmeans_init` with a mask that keeps no token: the reference raises (k-means has no row to start
 * from). A program cannot, so the call leaves the state as given, the codebook uninitialised,
 * and a later batch with kept tokens initialises it.
 */

const b = 2, n = 4, d = 4, K = 5

interface Out {
  readonly state: Named<HostTensor>
  readonly indices: HostTensor
  readonly quantized: HostTensor
}

async function call(backend: Backend, q: VectorQuantize, init: Init, x: HostTensor, mask: HostTensor, training: boolean, seed: number): Promise<Out> {
  const key = tensorOf([seed, 3], [2], 'int32')
  const r = await runOnHost(backend, [init.params, init.state, x, mask, key] as const, (p, s, xs, m, k) => {
    const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { training, key: k as Tensor, mask: m as Tensor })
    return { state: { ...res.state }, indices: res.indices, quantized: res.quantized }
  })
  if (E.isLeft(r)) throw new Error(r.left.message)
  return r.right as unknown as Out
}

const none = maskOf(Array.from({ length: b }, () => Array(n).fill(0)))
const someKept = fc.array(fc.array(fc.boolean(), { minLength: n, maxLength: n }), { minLength: b, maxLength: b }).map((rows) => {
  rows[1]![2] = true
  return maskOf(rows.map((r) => r.map(Number)))
})

describeLanes('vq-kmeans-empty-mask', nodeLanes, (l) => `VectorQuantize k-means init with every token masked out on ${l.name}`, (backend) => {
  const configs: [string, Record<string, unknown>][] = [
    ['euclidean with dead codes', { threshold_ema_dead_code: 2 }],
    ['cosine, separate heads, no commitment loss', { use_cosine_sim: true, heads: 2, codebook_dim: 2, separate_codebook_per_head: true, commitment_weight: 0 }],
    ['shared heads, cross-entropy commitment, affine statistics', { heads: 2, codebook_dim: 2, commitment_use_cross_entropy_loss: true, affine_param: true }],
    ['Gumbel sampling, orthogonal regularisation', { stochastic_sample_codes: true, sample_codebook_temp: 0.5, orthogonal_reg_weight: 0.5 }],
  ]

  it.each(configs)('%s: the call leaves the state as given (initted false); a later batch initialises the codebook', async (_name, cfg) => {
    const q = orThrow(vectorQuantize({ dim: d, codebook_size: K, kmeans_init: true, kmeans_iters: 2, ...cfg }))
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 1000 }), someKept, async (seed, later) => {
        const init = q.init(random.keyFromSeed(seed))
        const x = randn([b, n, d], seed + 1)
        for (const training of [false, true]) {
          const r = await call(backend, q, init, x, none, training, seed)
          expect(Object.keys(r.state).sort()).toEqual(Object.keys(init.state).sort())
          for (const [k, t] of Object.entries(init.state)) expect(arr(r.state[k]!), `${k}, training ${training}`).toEqual(arr(t))
          expect(r.state['_codebook.initted']!.data[0]).toBe(0)
          expect(arr(r.indices).every((i) => i === -1)).toBe(true)
          expect(arr(r.quantized).every((v) => v === 0)).toBe(true)
          // the next batch, with kept tokens, initialises the codebook
          const next = await call(backend, q, { params: init.params, state: r.state }, randn([b, n, d], seed + 2), later, training, seed + 1)
          expect(next.state['_codebook.initted']!.data[0]).toBe(1)
          expect(arr(next.state['_codebook.cluster_size']!).some((v) => v > 0)).toBe(true)
        }
      }),
      { numRuns: 2 },
    )
  })

  it('an initialised codebook stays initialised and is not replaced by k-means means', async () => {
    const q = orThrow(vectorQuantize({ dim: d, codebook_size: K, kmeans_init: true, kmeans_iters: 2, freeze_codebook: true }))
    const init = q.init(random.keyFromSeed(4))
    const first = await call(backend, q, init, randn([b, n, d], 5), maskOf([[1, 1, 0, 1], [0, 1, 1, 1]]), true, 1)
    const r = await call(backend, q, { params: init.params, state: first.state }, randn([b, n, d], 6), none, true, 2)
    expect(r.state['_codebook.initted']!.data[0]).toBe(1)
    expect(arr(r.state['_codebook.embed']!)).toEqual(arr(first.state['_codebook.embed']!))
  })
})

describeLanes('vq-kmeans-empty-mask-host', nodeLanes, (l) => `applyOnHost with k-means init and every token masked out on ${l.name}`, (backend) => {
  it('eval returns the state as given (initted false); training is a Left naming the mask (or lens) that keeps no token', async () => {
    const q = orThrow(vectorQuantize({ dim: d, codebook_size: K, kmeans_init: true, kmeans_iters: 2 }))
    const init = q.init(random.keyFromSeed(7))
    const args = { ...init, x: randn([b, n, d], 8), key: tensorOf([1, 2], [2], 'int32'), options: { mask: none } }
    const ev = await applyOnHost(q, { ...args, training: false }, backend)
    if (E.isLeft(ev)) throw new Error(ev.left.message)
    for (const [k, t] of Object.entries(init.state)) expect(arr(ev.right.state[k]!), k).toEqual(arr(t))
    const tr = await applyOnHost(q, { ...args, training: true }, backend)
    expect(E.isLeft(tr) && tr.left.message).toMatch(/options\.mask keeps no token/)
    const byLens = await applyOnHost(q, { ...args, options: { lens: tensorOf([0, 0], [b], 'int32') }, training: true }, backend)
    expect(E.isLeft(byLens) && byLens.left.message).toMatch(/options\.lens keeps no token/)
    // one kept token is enough
    const one = await applyOnHost(q, { ...args, options: { lens: tensorOf([1, 0], [b], 'int32') }, training: true }, backend)
    if (E.isLeft(one)) throw new Error(one.left.message)
    expect(Array.from(one.right.state['_codebook.initted']!.data)).toEqual([1])
  })
})
