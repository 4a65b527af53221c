import { expect, it } from 'vitest'
import { fc } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor, TesseraError } from '@tessera/core'
import { concat, random, scoped, tensorOf } from '@tessera/core'
import type { Init, Named } from '../src/quantizer.js'
import type { RVQApplyOptions, ResidualVQ } from '../src/residual-vq/residual-vq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { groupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { residualLFQ } from '../src/residual/residual-lfq.js'
import { residualSimVQ } from '../src/simvq/residual-simvq.js'
import type { Quantizer } from '../src/quantizer.js'
import { makeVectorQuantize } from '../src/vq/vector-quantize.js'
import { pythonRandrange } from '../src/common/python-random.js'
import { applyOnHost, runOnHost } from '../src/run.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'
import { arr, backends, orThrow, randn } from './helpers.js'
import type { VQCallResult } from './vq-call.js'
import { maskOf, maxDiff } from './vq-call.js'

const b = 2, n = 5, d = 4, K = 6
const rvq = (o: Record<string, unknown>): ResidualVQ => orThrow(residualVQ({ dim: d, codebook_size: K, num_quantizers: 3, ...o }))

type Out = VQCallResult

/** One ResidualVQ call with tensor options fed as program inputs (`opts` builds them from `tensors`). */
async function call(
  backend: Backend,
  q: ResidualVQ,
  init: Init,
  x: HostTensor,
  o: { training: boolean; key?: readonly [number, number]; tensors?: Named<HostTensor>; opts?: (t: Named<Tensor>) => Partial<RVQApplyOptions> },
): Promise<E.Either<TesseraError, Out>> {
  const key = o.key ? tensorOf([...o.key], [2], 'int32') : null
  const r = await runOnHost(backend, [init.params, init.state, x, o.tensors ?? {}, key] as const, (p, s, xs, t, k) => {
    const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, {
      training: o.training,
      ...(k ? { key: k as Tensor } : {}),
      ...(o.opts ? o.opts(t as Named<Tensor>) : {}),
    })
    return { quantized: res.quantized, indices: res.indices, loss: res.loss, losses: { ...res.losses }, state: { ...res.state }, extra: { ...(res.extra ?? {}) } }
  })
  return r as E.Either<TesseraError, Out>
}
const callOk = async (...args: Parameters<typeof call>): Promise<Out> => orThrow(await call(...args))

/** x with the masked-out tokens replaced by other values */
function perturbMasked(x: HostTensor, mask: HostTensor, seed: number): HostTensor {
  const noise = randn(x.shape, seed, 10)
  const data = Float32Array.from(x.data)
  const dd = x.shape[2]!
  for (let t = 0; t < b * n; t++) if (!mask.data[t]) for (let j = 0; j < dd; j++) data[t * dd + j] = noise.data[t * dd + j]!
  return tensorOf(data, x.shape)
}

const masks = fc.array(fc.array(fc.boolean(), { minLength: n, maxLength: n }), { minLength: b, maxLength: b }).map((rows) => {
  rows[0]![0] = true // at least one kept token, so every loss is a number
  return maskOf(rows.map((r) => r.map(Number)))
})
const allTrue = maskOf(Array.from({ length: b }, () => Array(n).fill(1)))

const expectStatesClose = (got: Named<HostTensor>, want: Named<HostTensor>, tol: number) => {
  expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort())
  for (const k of Object.keys(want)) expect(maxDiff(got[k]!.data, want[k]!.data), k).toBeLessThanOrEqual(tol)
}

// CPython 3's random.Random(seed).randrange(start, stop) for these seeds (python3 -c "import random; ..."): the reference's draw
const SEEDS = [0, 1, 2, 7, 42, 9999, 123456789, 2 ** 32 + 5]
const CPYTHON: [number, number, number[]][] = [
  [0, 3, [1, 0, 0, 1, 2, 0, 2, 0]],
  [1, 4, [2, 1, 1, 2, 3, 1, 3, 1]],
  [0, 4, [3, 1, 0, 2, 0, 0, 3, 1]],
  [0, 2, [1, 0, 0, 1, 0, 0, 1, 0]],
  [3, 1000, [867, 140, 981, 334, 657, 857, 659, 164]],
  [0, 2 ** 31 + 3, [1654615998, 577090037, 242886303, 1390851128, 478163327, 533280010, 1899526012, 675479763]],
]

it('pythonRandrange is CPython\'s random.Random(seed).randrange (a negative seed as its absolute value)', () => {
  for (const [a, z, want] of CPYTHON) expect(SEEDS.map((s) => pythonRandrange(s, a, z))).toEqual(want)
  expect(pythonRandrange(-5, 0, 100)).toBe(pythonRandrange(5, 0, 100))
})

it('ResidualFSQ, ResidualLFQ and ResidualSimVQ share the residual forwarding: options their layers are not handed are Lefts naming them', async () => {
  const qs: [string, Quantizer][] = [
    ['ResidualFSQ', orThrow(residualFSQ({ levels: [5, 5], num_quantizers: 2, dim: 4 }))],
    ['ResidualLFQ', orThrow(residualLFQ({ dim: 4, codebook_size: 16, num_quantizers: 2 }))],
    ['ResidualSimVQ', orThrow(residualSimVQ({ dim: 4, codebook_size: 8, num_quantizers: 2 }))],
  ]
  const x = randn([2, 3, 4], 1)
  for (const [name, q] of qs) {
    const init = q.init(random.keyFromSeed(1))
    const call = (options?: Record<string, unknown>) =>
      applyOnHost(q, { params: init.params, state: init.state, x, training: true, key: tensorOf([1, 2], [2], 'int32'), ...(options ? { options: options as never } : {}) }, backends[0]!)
    expect(E.isRight(await call())).toBe(true)
    for (const k of ['mask', 'sampleCodebookTemp', 'freezeCodebook']) {
      if (name === 'ResidualLFQ' && k === 'mask') continue // handed to its LFQ layers, as the reference does (lfq-mask.test.ts)
      const r = await call({ [k]: k === 'mask' ? maskOf([[1, 1, 1], [1, 0, 1]]) : k === 'freezeCodebook' ? true : 0.5 })
      expect(E.isLeft(r) && r.left.where, `${name} ${k}`).toBe(`${name}.${k}`)
    }
  }
})

const concatLast = (ts: readonly Tensor[]): Tensor => concat(ts, ts[0]!.rank - 1)

/** The first layer with index -1 everywhere (nq when none): the cut-off + 1. */
const activeLayers = (indices: HostTensor, nq: number) => {
  for (let l = 0; l < nq; l++) if (Array.from({ length: indices.data.length / nq }, (_, t) => indices.data[t * nq + l]).every((v) => v === -1)) return l
  return nq
}

describeLanes('rvq-options', nodeLanes, (lane) => `ResidualVQ per-call options on ${lane.name}`, (backend) => {
  const configs: [string, Record<string, unknown>][] = [
    ['EMA layers', {}],
    ['dead codes and k-means init', { threshold_ema_dead_code: 0.9, kmeans_init: true, kmeans_iters: 2 }],
    ['cosine, quantize dropout', { use_cosine_sim: true, quantize_dropout: true }],
    ['shared codebook', { shared_codebook: true }],
    ['QINCo', { implicit_neural_codebook: true, mlp_kwargs: { dim_hidden: 5, depth: 2 } }],
  ]

  it.each(configs.concat([['QINCo with diversity and orthogonal losses', { implicit_neural_codebook: true, codebook_diversity_loss_weight: 0.5, orthogonal_reg_weight: 0.3, mlp_kwargs: { depth: 1 } }]]))('%s: a mask that keeps every token equals no mask (eval and a training step)', async (_n, cfg) => {
    const q = rvq(cfg)
    const init = q.init(random.keyFromSeed(3))
    const x = randn([b, n, d], 4)
    for (const training of [false, true]) {
      const plain = await callOk(backend, q, init, x, { training, key: [1, 2], opts: () => ({ returnAllCodes: true }) })
      const masked = await callOk(backend, q, init, x, { training, key: [1, 2], tensors: { m: allTrue }, opts: (t) => ({ mask: t['m']!, returnAllCodes: true }) })
      expect(arr(masked.indices)).toEqual(arr(plain.indices))
      expect(maxDiff(masked.quantized.data, plain.quantized.data)).toBeLessThanOrEqual(1e-6)
      expect(maxDiff(masked.extra['all_codes']!.data, plain.extra['all_codes']!.data)).toBeLessThanOrEqual(1e-6)
      expectStatesClose(masked.state, plain.state, 1e-5)
      // cosine: each layer's masked commitment compares with its raw input, not the normalized one
      if (!cfg['use_cosine_sim']) expect(maxDiff(masked.extra['all_losses']!.data, plain.extra['all_losses']!.data)).toBeLessThanOrEqual(1e-5)
    }
  })

  // the shared codebook's end-of-step revival draws from every layer input, masked or not (as the reference), so no dead codes there
  const maskedConfigs = configs
    .filter(([name]) => name !== 'cosine, quantize dropout')
    .concat([
      ['shared codebook with EMA, dropout', { shared_codebook: true, quantize_dropout: true }],
      ['QINCo with dropout', { implicit_neural_codebook: true, quantize_dropout: true, mlp_kwargs: { depth: 1 } }],
    ])
  it.each(maskedConfigs)('%s: masked-out tokens change no EMA state, loss or kept output; they get index -1 and a zero code in every layer', async (_n, cfg) => {
    const q = rvq(cfg)
    await fc.assert(
      fc.asyncProperty(masks, fc.integer({ min: 1, max: 1000 }), async (mask, seed) => {
        const init = q.init(random.keyFromSeed(seed))
        const x = randn([b, n, d], seed + 1)
        const y = perturbMasked(x, mask, seed + 2)
        const o = { training: true, key: [seed, 5] as const, tensors: { m: mask }, opts: (t: Named<Tensor>) => ({ mask: t['m']! }) }
        const rx = await callOk(backend, q, init, x, o)
        const ry = await callOk(backend, q, init, y, o)
        expectStatesClose(ry.state, rx.state, 1e-5)
        expect(maxDiff(ry.extra['all_losses']!.data, rx.extra['all_losses']!.data)).toBeLessThanOrEqual(1e-5)
        expect(arr(ry.indices)).toEqual(arr(rx.indices))
        expect(maxDiff(ry.quantized.data, rx.quantized.data)).toBeLessThanOrEqual(1e-5)
        const nq = 3
        for (let t = 0; t < b * n; t++) {
          if (mask.data[t]) continue
          for (let l = 0; l < nq; l++) expect(rx.indices.data[t * nq + l]).toBe(-1)
          for (let j = 0; j < d; j++) expect(rx.quantized.data[t * d + j]).toBe(0)
        }
      }),
      { numRuns: 6 },
    )
  })

  it('a masked token keeps its residual: every layer sees the input there (the layers hand back zero codes)', async () => {
    const q = rvq({ threshold_ema_dead_code: 0.9 })
    const init = q.init(random.keyFromSeed(8))
    const x = randn([b, n, d], 9)
    const mask = maskOf([[1, 0, 1, 1, 0], [0, 1, 1, 1, 1]])
    const r = await callOk(backend, q, init, x, { training: true, key: [3, 4], tensors: { m: mask }, opts: (t) => ({ mask: t['m']! }) })
    for (let t = 0; t < b * n; t++)
      for (const l of [1, 2]) {
        const li = r.extra[`layer${l}_input`]!.data, l0 = r.extra['layer0_input']!.data
        const row = Array.from({ length: d }, (_, j) => li[t * d + j]!)
        if (!mask.data[t]) expect(row).toEqual(Array.from({ length: d }, (_, j) => x.data[t * d + j]!))
        // a kept token's residual has moved by the codes before it
        else expect(maxDiff(row, Array.from({ length: d }, (_, j) => l0[t * d + j]!))).toBeGreaterThan(0)
      }
  })

  it.each([
    ['layers', {}],
    ['projections', { codebook_dim: 3 }],
    ['shared codebook', { shared_codebook: true }],
  ] as [string, Record<string, unknown>][])('%s: target indices give the sum of every layer\'s cross entropy on the projected input (the reference\'s loop skips the residual update)', async (_n, cfg) => {
    const q = rvq({ quantize_dropout: true, ...cfg })
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 1000 }), fc.boolean(), async (seed, training) => {
        const init = q.init(random.keyFromSeed(seed))
        const x = randn([b, n, d], seed + 1)
        const tg = tensorOf(Array.from({ length: b * n * 3 }, (_, i) => (i * 7 + seed) % K), [b, n, 3], 'int32')
        const r = orThrow(
          await runOnHost(backend, [init.params, init.state, x, tg, tensorOf([seed, 1], [2], 'int32')] as const, (p, s, xs, t, k) => {
            const P = p as Named<Tensor>, S = s as Named<Tensor>
            const res = q.apply(P, S, xs as Tensor, { training, key: k as Tensor, indices: t as Tensor, returnAllCodes: true })
            const z = res.extra!['project_in_output']!
            // each layer on its own, as a VectorQuantize given the projected input and its targets (eval: no statistics move)
            const each = q.config.layers.map((lc, i) =>
              makeVectorQuantize(lc).apply(scoped(P, `layers.${q.config.shared_codebook ? 0 : i}.`), scoped(S, `layers.${q.config.shared_codebook ? 0 : i}.`), z, { training: false, indices: (t as Tensor).index(-1, i) }).loss,
            )
            return { loss: res.loss, all: res.extra!['all_losses']!, each: each.reduce((a, c) => a.add(c)), quantized: res.quantized, indices: res.indices, hasCodes: z.builder.scalar('all_codes' in res.extra! ? 1 : 0) }
          }),
        ) as Record<string, HostTensor>
        expect(Math.abs(r['loss']!.data[0]! - r['each']!.data[0]!)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(r['each']!.data[0]!)))
        expect(Math.abs(arr(r['all']!).reduce((a, v) => a + v, 0) - r['loss']!.data[0]!)).toBeLessThanOrEqual(1e-5)
        // quantize dropout is skipped and the given codes come back; nothing is added to quantized, so it is project_out(0)
        expect(arr(r['indices']!)).toEqual(arr(tg))
        const bias = cfg['codebook_dim'] ? arr(init.params['project_out.bias']!) : Array(d).fill(0)
        for (let t = 0; t < b * n; t++) for (let j = 0; j < d; j++) expect(Math.abs(r['quantized']!.data[t * d + j]! - bias[j]!)).toBeLessThanOrEqual(1e-6)
        expect(r['hasCodes']!.data[0]).toBe(0)
      }),
      { numRuns: 4 },
    )
  })

  it('target indices: a -1 (a dropped layer) makes the loss NaN, as the reference asserts; training takes each layer\'s EMA step on the unreduced input', async () => {
    const q = rvq({})
    const init = q.init(random.keyFromSeed(2))
    const x = randn([b, n, d], 3)
    const tg = tensorOf(Array.from({ length: b * n * 3 }, (_, i) => (i === 4 ? -1 : i % K)), [b, n, 3], 'int32')
    const r = await callOk(backend, q, init, x, { training: false, tensors: { t: tg }, opts: (t) => ({ indices: t['t']! }) })
    expect(Number.isNaN(r.loss.data[0]!)).toBe(true)
    // every layer sees x itself: layer 1's EMA step from a target call equals layer 0's when both start from layer 0's codebook
    const same: Record<string, HostTensor> = { ...init.state }
    for (const k of Object.keys(init.state)) if (k.startsWith('layers.1.')) same[k] = init.state[k.replace('layers.1.', 'layers.0.')]!
    const ok = tensorOf(Array.from({ length: b * n * 3 }, (_, i) => i % K), [b, n, 3], 'int32')
    const rt = await callOk(backend, q, { params: init.params, state: same }, x, { training: true, tensors: { t: ok }, opts: (t) => ({ indices: t['t']! }) })
    for (const k of ['_codebook.embed', '_codebook.cluster_size', '_codebook.embed_avg'])
      expect(maxDiff(rt.state[`layers.1.${k}`]!.data, rt.state[`layers.0.${k}`]!.data), k).toBeLessThanOrEqual(1e-6)
    expect(maxDiff(rt.state['layers.0._codebook.cluster_size']!.data, init.state['layers.0._codebook.cluster_size']!.data)).toBeGreaterThan(0)
  })

  it('GroupedResidualVQ: an all-true mask equals no mask; the mask reaches every group', async () => {
    const g = orThrow(groupedResidualVQ({ dim: 8, groups: 2, codebook_size: K, num_quantizers: 2 }))
    const init = g.init(random.keyFromSeed(5))
    const x = randn([b, n, 8], 6)
    const part = maskOf([[1, 1, 0, 1, 0], [1, 0, 1, 1, 1]])
    const run = (m?: HostTensor) => applyOnHost(g, { params: init.params, state: init.state, x, training: true, ...(m ? { options: { mask: m } } : {}) }, backend)
    const plain = orThrow(await run())
    const masked = orThrow(await run(allTrue))
    expect(arr(masked.indices)).toEqual(arr(plain.indices))
    expectStatesClose(masked.state, plain.state, 1e-5)
    const some = orThrow(await run(part))
    // indices (groups, b, n, q): -1 at masked tokens in both groups
    for (let gi = 0; gi < 2; gi++)
      for (let t = 0; t < b * n; t++) for (let l = 0; l < 2; l++) expect(some.indices.data[(gi * b * n + t) * 2 + l] === -1).toBe(!part.data[t])
  })

  it.each([
    ['greedy, cutoff 0', { num_quantizers: 3 }, 0, 1],
    ['greedy, cutoff 1, multiple of 2', { num_quantizers: 4, quantize_dropout_cutoff_index: 1, quantize_dropout_multiple_of: 2 }, 1, 2],
    ['shared codebook with dead codes', { num_quantizers: 4, shared_codebook: true, threshold_ema_dead_code: 0.5 }, 0, 1],
    ['beam search', { num_quantizers: 3, beam_size: 2 }, 0, 1],
  ] as [string, Record<string, unknown>, number, number][])('%s: randQuantizeDropoutFixedSeed cuts where the reference\'s seed does, whatever the key', async (_n, cfg, cutoff, multiple) => {
    const q = rvq({ quantize_dropout: true, ...cfg })
    const nq = q.config.num_quantizers
    const init = q.init(random.keyFromSeed(4))
    const x = randn([b, n, d], 5)
    for (const [si, seed] of SEEDS.entries()) {
      const want = Math.min(nq, Math.ceil((CPYTHON.find(([a, z]) => a === cutoff && z === nq)![2][si]! + 1) / multiple) * multiple)
      const o = (k: [number, number]) => ({ training: true, key: k, opts: () => ({ randQuantizeDropoutFixedSeed: seed }) })
      const r1 = await callOk(backend, q, init, x, o([1, si]))
      expect(activeLayers(r1.indices, nq), `seed ${seed}`).toBe(want)
      for (let l = 0; l < want; l++) expect(r1.indices.data[l]).not.toBe(-1)
      // layers after the cut keep their state and add nothing
      if (!q.config.shared_codebook && want < nq) expect(maxDiff(r1.state[`layers.${want}._codebook.cluster_size`]!.data, init.state[`layers.${want}._codebook.cluster_size`]!.data)).toBe(0)
      expect(r1.extra['all_losses']!.shape).toEqual([nq])
      for (let l = want; l < nq; l++) expect(r1.extra['all_losses']!.data[l]).toBe(0)
      if (si > 2) continue
      const r2 = await callOk(backend, q, init, x, o([9, 9 + si]))
      expect(arr(r2.indices)).toEqual(arr(r1.indices))
    }
    // eval ignores the seed, as the reference's dropout runs only in training
    const ev = await callOk(backend, q, init, x, { training: false, opts: () => ({ randQuantizeDropoutFixedSeed: 0 }) })
    expect(activeLayers(ev.indices, nq)).toBe(nq)
  })

  it('shared codebook, cut drawn from the key: the end-of-step dead-code revival draws only from the layers that ran, as the reference\'s saved inputs are', async () => {
    // every code is dead at the end of the step (threshold above any cluster size, a revived code's
    // size reset below it), so every code is replaced by a row drawn there
    const q = rvq({ num_quantizers: 4, shared_codebook: true, quantize_dropout: true, threshold_ema_dead_code: 1e6, reset_cluster_size: 1 })
    const init = q.init(random.keyFromSeed(4))
    const x = randn([b, n, d], 5)
    const isRowOfX = (row: Float32Array) => Array.from({ length: b * n }, (_, t) => t).some((t) => row.every((v, j) => v === x.data[t * d + j]))
    const seen = new Set<number>()
    for (let k = 0; k < 40 && !(seen.has(1) && seen.has(4)); k++) {
      const r = await callOk(backend, q, init, x, { training: true, key: [3, k] })
      const ran = activeLayers(r.indices, 4)
      seen.add(ran)
      const embed = r.state['layers.0._codebook.embed']!.data as Float32Array
      const rows = Array.from({ length: K }, (_, c) => embed.subarray(c * d, (c + 1) * d))
      // only layer 0 ran: its input is x itself, so every revived code is one of x's rows
      if (ran === 1) for (const row of rows) expect(isRowOfX(row), `key [3, ${k}]: a code drawn from a dropped layer's input`).toBe(true)
      // every layer ran: the later layers' inputs (residuals) are drawn from too
      if (ran === 4) expect(rows.some((row) => !isRowOfX(row)), `key [3, ${k}]`).toBe(true)
    }
    expect([...seen]).toEqual(expect.arrayContaining([1, 4]))
  })

  it('freezeCodebook is the forward\'s, default false: it overrides the layers\' freeze_codebook, as the reference\'s forward hands its default to every layer', async () => {
    for (const shared of [false, true]) {
      const q = rvq({ freeze_codebook: true, shared_codebook: shared })
      const init = q.init(random.keyFromSeed(6))
      const x = randn([b, n, d], 7)
      const moved = await callOk(backend, q, init, x, { training: true })
      const frozen = await callOk(backend, q, init, x, { training: true, opts: () => ({ freezeCodebook: true }) })
      const name = 'layers.0._codebook.cluster_size'
      expect(maxDiff(moved.state[name]!.data, init.state[name]!.data), `shared ${shared}`).toBeGreaterThan(0)
      // the shared codebook's end-of-step EMA runs frozen or not, as the reference's
      if (!shared) expect(maxDiff(frozen.state[name]!.data, init.state[name]!.data)).toBe(0)
      const plain = await callOk(backend, rvq({ shared_codebook: shared }), init, x, { training: true })
      expectStatesClose(moved.state, plain.state, 0)
    }
  })

  it('GroupedResidualVQ given target indices (groups, b, n, q): group g\'s ResidualVQ takes its chunk with indices[g]; losses sum, outputs concatenate', async () => {
    for (const cfg of [{}, { codebook_dim: 3 }, { shared_codebook: true }]) {
      const g = orThrow(groupedResidualVQ({ dim: 8, groups: 2, codebook_size: K, num_quantizers: 2, ...cfg }))
      const init = g.init(random.keyFromSeed(11))
      const x = randn([b, n, 8], 12)
      const tg = tensorOf(Array.from({ length: 2 * b * n * 2 }, (_, i) => (i * 5 + 1) % K), [2, b, n, 2], 'int32')
      for (const training of [false, true]) {
        const r = orThrow(
          await runOnHost(backend, [init.params, init.state, x, tg] as const, (p, s, xs, t) => {
            const P = p as Named<Tensor>, S = s as Named<Tensor>, T = t as Tensor
            const res = g.apply(P, S, xs as Tensor, { training, indices: T })
            const chunks = (xs as Tensor).split(2, 2)
            const each = (g.spec.groups as readonly ResidualVQ[]).map((q, i) => q.apply(scoped(P, `rvqs.${i}.`), scoped(S, `rvqs.${i}.`), chunks[i]!, { training, indices: T.index(0, i) }))
            return {
              loss: res.loss,
              want: each[0]!.loss.add(each[1]!.loss),
              quantized: res.quantized,
              wantQ: concatLast(each.map((e) => e.quantized)),
              indices: res.indices,
              all: res.extra!['all_losses']!,
              state: { ...res.state },
              wantState: { ...Object.fromEntries(each.flatMap((e, i) => Object.entries(e.state).map(([k, v]) => [`rvqs.${i}.${k}`, v]))) },
            }
          }),
        ) as unknown as { loss: HostTensor; want: HostTensor; quantized: HostTensor; wantQ: HostTensor; indices: HostTensor; all: HostTensor; state: Named<HostTensor>; wantState: Named<HostTensor> }
        expect(Math.abs(r.loss.data[0]! - r.want.data[0]!)).toBeLessThanOrEqual(1e-5)
        expect(r.all.shape).toEqual([2, 2])
        expect(maxDiff(r.quantized.data, r.wantQ.data)).toBe(0)
        expect(arr(r.indices)).toEqual(arr(tg))
        expectStatesClose(r.state, r.wantState, 0)
      }
    }
  })

  it('options the reference\'s forward does not take are Lefts naming them; bad values of the ones it takes too', async () => {
    const q = rvq({})
    const init = q.init(random.keyFromSeed(1))
    const x = randn([b, n, d], 2)
    const host = (options: Record<string, unknown>, qq: ResidualVQ = q, i: Init = init, training = true) =>
      applyOnHost(qq, { params: i.params, state: i.state, x, training, key: tensorOf([1, 1], [2], 'int32'), options: options as never }, backend)
    const where = async (p: ReturnType<typeof host>) => {
      const r = await p
      return E.isLeft(r) ? r.left.where : 'no error'
    }
    for (const k of ['topk', 'lens', 'manualEmaUpdate', 'replacementRows', 'emaUpdate', 'accumEmaUpdate', 'codebookTransformFn', 'maks'])
      expect(await where(host({ [k]: k === 'codebookTransformFn' ? (e: Tensor) => e : k === 'lens' ? tensorOf([1, 2], [2], 'int32') : true }))).toBe(`ResidualVQ.${k}`)
    expect(await where(host({ randQuantizeDropoutFixedSeed: 3.5 }))).toBe('ResidualVQ.randQuantizeDropoutFixedSeed')
    expect(await where(host({ mask: tensorOf([1, 1], [2], 'bool') }))).toBe('ResidualVQ.mask')
    expect(await where(host({ mask: randn([b, n], 1) }))).toBe('ResidualVQ.mask')
    expect(await where(host({ indices: tensorOf(new Array(b * n * 2).fill(0), [b, n, 2], 'int32') }))).toBe('ResidualVQ.indices')
    const outside = await host({ indices: tensorOf(new Array(b * n * 3).fill(K), [b, n, 3], 'int32') })
    expect(E.isLeft(outside) && outside.left.message).toMatch(/options\.indices.*outside \[0, 6\)/)
    expect(await where(host({ sampleCodebookTemp: 'hot' }))).toBe('ResidualVQ.sampleCodebookTemp')
    expect(await where(host({ returnAllCodes: 1 }))).toBe('ResidualVQ.returnAllCodes')
    // beam search takes no mask (the reference crashes), beam search and QINCo no targets yet
    expect(await where(host({ mask: allTrue, beamSize: 2 }))).toBe('ResidualVQ.mask')
    expect(await where(host({ indices: tensorOf(new Array(b * n * 3).fill(0), [b, n, 3], 'int32'), beamSize: 2 }))).toBe('ResidualVQ.indices')
    // images: the reference's layers refuse a mask, and it asserts no targets
    const img = rvq({ accept_image_fmap: true })
    const ximg = randn([1, d, 2, 2], 3)
    const onImg = await applyOnHost(img, { params: init.params, state: init.state, x: ximg, training: false, options: { mask: maskOf([[1, 1, 1, 1]]) } }, backend)
    expect(E.isLeft(onImg) && onImg.left.where).toBe('ResidualVQ.mask')
    // the options the reference takes still run
    expect(await where(host({ mask: allTrue, sampleCodebookTemp: 0.5, freezeCodebook: true, returnAllCodes: true, beamSize: 1, inputRequiresGrad: false }))).toBe('no error')
    // GroupedResidualVQ takes no beam width or dropout seed; its targets come groups first
    const g = orThrow(groupedResidualVQ({ dim: d, groups: 2, codebook_size: K, num_quantizers: 2 }))
    const gi = g.init(random.keyFromSeed(2))
    const gw = async (options: Record<string, unknown>) => {
      const r = await applyOnHost(g, { params: gi.params, state: gi.state, x, training: false, options: options as never }, backend)
      return E.isLeft(r) ? r.left.where : 'no error'
    }
    for (const k of ['beamSize', 'randQuantizeDropoutFixedSeed', 'topk']) expect(await gw({ [k]: 2 })).toBe(`GroupedResidualVQ.${k}`)
    expect(await gw({ indices: tensorOf(new Array(b * n * 2).fill(0), [b, n, 2], 'int32') })).toBe('GroupedResidualVQ.indices')
    expect(await gw({ indices: tensorOf(new Array(2 * b * n * 2).fill(0), [2, b, n, 2], 'int32') })).toBe('no error')
    expect(await gw({ mask: allTrue, returnAllCodes: true, freezeCodebook: true, sampleCodebookTemp: 1 })).toBe('no error')
  })
})
