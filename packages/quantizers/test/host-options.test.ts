import { expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, Caps, HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { makeFSQ } from '../src/fsq/fsq.js'
import { decodeFSQ } from '../src/fsq/config.js'
import { hierarchicalVQ } from '../src/hierarchical/hierarchical-vq.js'
import type { Init, Named, Quantizer } from '../src/quantizer.js'
import type { FSQ } from '../src/fsq/fsq.js'
import type { GroupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import { groupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import type { ResidualVQ } from '../src/residual-vq/residual-vq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import type { HostApplyArgs, HostApplyResult } from '../src/run.js'
import { applyOnHost, runOnHost } from '../src/run.js'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { arr, orThrow, randn } from './helpers.js'
import { expectAgree, expectAgreeAll } from './host-compare.js'
import { describeLanes } from './lanes.js'
import { maskOf } from './vq-call.js'
import { nodeLanes } from './zoo.js'

/**
 * Every per-call option through `applyOnHost` (host tensors, checked at the boundary) gives what
 * the same option gives through `apply` traced by hand (tensors fed as program inputs), on every
 * Node lane; and bad option values are Lefts naming the option, what it expects and what it got.
 */

const b = 2, n = 4, d = 3, K = 6
const vq = (o: Record<string, unknown> = {}) => orThrow(vectorQuantize({ dim: d, codebook_size: K, ...o }))
const key = tensorOf([5, 7], [2], 'int32')

type Opts = (t: Named<Tensor>) => Record<string, unknown>

/** `q.apply` traced by hand: `tensors` become program inputs and `opts` builds the options from them. */
async function traced(backend: Backend, q: Quantizer, init: Init, x: HostTensor, training: boolean, tensors: Named<HostTensor>, opts: Opts) {
  return orThrow(
    await runOnHost(backend, [init.params, init.state, x, training ? key : null, tensors] as const, (p, s, xs, k, t) => {
      const r = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, {
        training,
        ...(k ? { key: k as Tensor } : {}),
        ...opts(t as Named<Tensor>),
      })
      return { quantized: r.quantized, indices: r.indices, loss: r.loss, losses: { ...r.losses }, state: { ...r.state }, extra: { ...(r.extra ?? {}) } }
    }),
  )
}

/** The same call through applyOnHost, with the host tensors in the options. */
async function onHost(backend: Backend, q: Quantizer, init: Init, x: HostTensor, training: boolean, options: Record<string, unknown>): Promise<HostApplyResult> {
  return orThrow(await applyOnHost(q, { ...init, x, training, ...(training ? { key } : {}), options } as HostApplyArgs, backend))
}

/** Every output agrees: exactly on exact backends, within the program tolerance elsewhere (the host call's program adds the finite probe). */
function expectSame(got: HostApplyResult, want: Awaited<ReturnType<typeof traced>>, caps: Caps, what: string) {
  expectAgree(got.indices, want.indices, caps, `${what}: indices`)
  expectAgree(got.quantized, want.quantized, caps, `${what}: quantized`)
  expectAgree(got.loss, want.loss, caps, `${what}: loss`)
  expectAgreeAll(got.losses, want.losses, caps, `${what}: losses`)
  expectAgreeAll(got.state, want.state, caps, `${what}: state`)
  expectAgreeAll(got.extra, want.extra, caps, `${what}: extra`)
}

/** A case: quantizer, training or eval, the option's host tensors, and the option built from host or traced tensors. */
interface Case {
  readonly name: string
  readonly q: () => Quantizer
  readonly x: readonly number[]
  readonly training: boolean
  readonly tensors?: Named<HostTensor>
  /** the options with the tensors in place: host tensors for applyOnHost, traced ones for apply */
  readonly opts: <T>(t: Readonly<Record<string, T>>) => Record<string, unknown>
}

const w = tensorOf([0, 0.5, 1, 1.5, 2, -0.25], [K])
const mask = maskOf([[1, 1, 0, 1], [0, 1, 1, 1]])
const lens = tensorOf([3, 1], [b], 'int32')
const targets = tensorOf([0, 5, -1, 2, 3, 3, 1, -1], [b, n], 'int32')

const cases: readonly Case[] = [
  { name: 'mask (training)', q: () => vq(), x: [b, n, d], training: true, tensors: { mask }, opts: (t) => ({ mask: t['mask'] }) },
  { name: 'mask (eval)', q: () => vq(), x: [b, n, d], training: false, tensors: { mask }, opts: (t) => ({ mask: t['mask'] }) },
  { name: 'lens', q: () => vq(), x: [b, n, d], training: true, tensors: { lens }, opts: (t) => ({ lens: t['lens'] }) },
  { name: 'topk', q: () => vq(), x: [b, n, d], training: true, opts: () => ({ topk: 3 }) },
  { name: 'indices (cross-entropy targets)', q: () => vq(), x: [b, n, d], training: true, tensors: { targets }, opts: (t) => ({ indices: t['targets'] }) },
  { name: 'emaUpdateWeight number', q: () => vq({ decay: 0.6 }), x: [b, n, d], training: true, opts: () => ({ emaUpdateWeight: 0.5 }) },
  { name: 'emaUpdateWeight tensor', q: () => vq({ decay: 0.6 }), x: [b, n, d], training: true, tensors: { w }, opts: (t) => ({ emaUpdateWeight: t['w'] }) },
  {
    name: 'emaUpdateWeight function',
    q: () => vq({ decay: 0.6 }),
    x: [b, n, d],
    training: true,
    opts: () => ({ emaUpdateWeight: (_sum: Tensor, counts: Tensor) => counts.mul(0.25).add(0.5) }),
  },
  { name: 'accumEmaUpdate', q: () => vq(), x: [b, n, d], training: true, opts: () => ({ accumEmaUpdate: true }) },
  {
    name: 'emaAccum',
    q: () => vq(),
    x: [b, n, d],
    training: true,
    tensors: { cs: tensorOf([1, 0, 2, 0, 0, 3], [1, K]), es: randn([1, K, d], 31) },
    opts: (t) => ({ emaAccum: { clusterSize: t['cs'], embedSum: t['es'] } }),
  },
  { name: 'emaUpdate false', q: () => vq(), x: [b, n, d], training: true, opts: () => ({ emaUpdate: false }) },
  {
    name: 'codebookTransformFn',
    q: () => vq({ route_gradients_to_input: false }),
    x: [b, n, d],
    training: true,
    opts: () => ({ codebookTransformFn: (e: Tensor) => e.expandDims(1).expandDims(1).broadcastTo([1, b, n, K, d]).mul(1.5) }),
  },
  { name: 'freezeCodebook', q: () => vq(), x: [b, n, d], training: true, opts: () => ({ freezeCodebook: true }) },
  { name: 'sampleCodebookTemp', q: () => vq({ stochastic_sample_codes: true }), x: [b, n, d], training: true, opts: () => ({ sampleCodebookTemp: 3 }) },
  { name: 'manualEmaUpdate', q: () => vq(), x: [b, n, d], training: true, opts: () => ({ manualEmaUpdate: true }) },
  { name: 'inputRequiresGrad', q: () => vq({ directional_reparam: true, rotation_trick: false, threshold_ema_dead_code: 1 }), x: [b, n, d], training: true, opts: () => ({ inputRequiresGrad: false }) },
  {
    name: 'ResidualVQ beamSize (training)',
    q: () => orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: K, decay: 0.5 })),
    x: [b, n, 4],
    training: true,
    opts: () => ({ beamSize: 2 }),
  },
  {
    name: 'ResidualVQ beamSize and returnAllCodes (eval)',
    q: () => orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: K })),
    x: [b, n, 4],
    training: false,
    opts: () => ({ beamSize: 3, returnAllCodes: true }),
  },
  {
    name: 'ResidualVQ returnAllCodes with quantize dropout and freezeCodebook',
    q: () => orThrow(residualVQ({ dim: 4, num_quantizers: 3, codebook_size: K, quantize_dropout: true })),
    x: [b, n, 4],
    training: true,
    opts: () => ({ returnAllCodes: true, freezeCodebook: true }),
  },
  {
    name: 'ResidualVQ mask',
    q: () => orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: K })),
    x: [b, n, 4],
    training: true,
    tensors: { mask },
    opts: (t) => ({ mask: t['mask'], sampleCodebookTemp: 0.5 }),
  },
  {
    name: 'ResidualVQ indices (cross-entropy targets)',
    q: () => orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: K })),
    x: [b, n, 4],
    training: true,
    tensors: { t: tensorOf(Array.from({ length: b * n * 2 }, (_, i) => (i * 5) % K), [b, n, 2], 'int32') },
    opts: (t) => ({ indices: t['t'] }),
  },
  {
    name: 'GroupedResidualVQ mask, returnAllCodes, freezeCodebook',
    q: () => orThrow(groupedResidualVQ({ dim: 4, groups: 2, num_quantizers: 2, codebook_size: K })),
    x: [b, n, 4],
    training: true,
    tensors: { mask },
    opts: (t) => ({ mask: t['mask'], returnAllCodes: true, freezeCodebook: true }),
  },
  {
    name: 'HierarchicalVQ sampleCodebookTemp',
    q: () => orThrow(hierarchicalVQ({ dim: 4, codebook_size: 8, accept_image_fmap: true, scales: [1, 2], kmeans_init: false, threshold_ema_dead_code: 0, stochastic_sample_codes: true })),
    x: [b, 4, 2, 2],
    training: true,
    opts: () => ({ sampleCodebookTemp: 50 }),
  },
]

describeLanes('host-options', nodeLanes, (l) => `applyOnHost per-call options on ${l.name}`, (backend) => {
  it.each(cases.map((c) => [c.name, c] as const))('%s: applyOnHost equals apply', async (_name, c) => {
    const q = c.q()
    const init = q.init(random.keyFromSeed(3))
    const x = randn(c.x, 4)
    const tensors = c.tensors ?? {}
    const want = await traced(backend, q, init, x, c.training, tensors, (t) => c.opts(t))
    const got = await onHost(backend, q, init, x, c.training, c.opts(tensors))
    expectSame(got, want, backend.caps, c.name)
  })

  it('an option changes the result (so the equalities above are not those of an ignored option)', async () => {
    const q = vq()
    const init = q.init(random.keyFromSeed(3))
    const x = randn([b, n, d], 4)
    const plain = await onHost(backend, q, init, x, true, {})
    const masked = await onHost(backend, q, init, x, true, { mask })
    expect(arr(masked.state['_codebook.cluster_size']!)).not.toEqual(arr(plain.state['_codebook.cluster_size']!))
    const top = await onHost(backend, q, init, x, true, { topk: 2 })
    expect(top.indices.shape).toEqual([b, n, 2])
  })

  it('updatedParams come back: a learnable codebook revived by dead-code replacement', async () => {
    const q = vq({ learnable_codebook: true, ema_update: false, threshold_ema_dead_code: 100 })
    const init = q.init(random.keyFromSeed(8))
    const x = randn([b, n, d], 9)
    const r = await onHost(backend, q, init, x, true, {})
    const embed = r.updatedParams?.['_codebook.embed']
    expect(embed?.shape).toEqual(init.params['_codebook.embed']!.shape)
    expect(arr(embed!)).not.toEqual(arr(init.params['_codebook.embed']!))
    // a step skipped for non-finite input rewrites no parameter either
    const bad = { ...x, data: x.data.map((v, i) => (i === 4 ? NaN : v)) }
    const skipped = orThrow(await applyOnHost(q, { ...init, x: bad, training: true, key, nonFinite: 'skip-update' }, backend))
    expect(skipped.nonFinite).toMatch(/x is not finite at position \[0,1,1\]/)
    expect(arr(skipped.updatedParams!['_codebook.embed']!)).toEqual(arr(init.params['_codebook.embed']!))
  })
})

it('options are typed from each quantizer\'s apply: host tensors for tensors, its own names only', () => {
  const h = tensorOf([1, 2], [2], 'int32')
  const base = { params: {}, state: {}, x: randn([b, n, d], 1) }
  const ok: HostApplyArgs<VectorQuantize> = {
    ...base,
    options: { mask, lens: h, topk: 2, emaAccum: { clusterSize: w, embedSum: w }, emaUpdateWeight: (_s: Tensor, c: Tensor) => c, codebookTransformFn: (e: Tensor) => e },
  }
  const rvq: HostApplyArgs<ResidualVQ> = { ...base, options: { beamSize: 2, returnAllCodes: true } }
  const grvq: HostApplyArgs<GroupedResidualVQ> = { ...base, options: { returnAllCodes: true } }
  // @ts-expect-error a misspelt option
  const typo: HostApplyArgs<VectorQuantize> = { ...base, options: { lenz: h } }
  // @ts-expect-error FSQ has no options of its own
  const fsqMask: HostApplyArgs<FSQ> = { ...base, options: { mask } }
  // @ts-expect-error key is an argument of its own
  const keyOpt: HostApplyArgs<VectorQuantize> = { ...base, options: { key } }
  // @ts-expect-error the host API takes host tensors, not traced ones
  const traced_: HostApplyArgs<VectorQuantize> = { ...base, options: { mask: {} as Tensor } }
  expect([ok, rvq, grvq, typo, fsqMask, keyOpt, traced_].every((a) => 'options' in a)).toBe(true)
})

/** The Left of an applyOnHost call on the cpu lane's first backend. */
async function leftOf(q: Quantizer, args: Record<string, unknown>, backend: Backend) {
  const r = await applyOnHost(q, args as unknown as HostApplyArgs, backend)
  if (E.isRight(r)) throw new Error('expected a Left')
  return r.left
}

describeLanes('host-options', nodeLanes.slice(0, 1), (l) => `applyOnHost refuses bad options on ${l.name}`, (backend) => {
  const q = vq()
  const init = q.init(random.keyFromSeed(3))
  const x = randn([b, n, d], 4)
  const call = (options: unknown, training = true) => leftOf(q, { ...init, x, training, key, options }, backend)

  it.each<[string, unknown, RegExp]>([
    ['a mask of the wrong shape', { mask: maskOf([[1, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 0]]) }, /mask: must be \(2, 4\) for x \[2,4,3\], got bool\[3,4\]/],
    ['a float mask', { mask: tensorOf(new Float32Array(b * n), [b, n]) }, /mask: must be bool, got float32\[2,4\]/],
    ['a mask as a plain array', { mask: [[true, false]] }, /options\.mask must be a host tensor .*got/],
    ['a mask of bad data', { mask: { shape: [b, n], dtype: 'bool', data: new Float32Array(b * n) } }, /options\.mask has Float32Array data for dtype bool/],
    ['a mask byte other than 0 or 1', { mask: { shape: [b, n], dtype: 'bool', data: Uint8Array.from([1, 1, 2, 1, 0, 1, 1, 1]) } }, /options\.mask \(bool\[2,4\]\) holds 2 at flat position 2; a bool tensor holds 0 or 1/],
    ['lens of the wrong dtype', { lens: tensorOf([1, 2], [b]) }, /lens: must be int32, got float32\[2\]/],
    ['lens of the wrong shape', { lens: tensorOf([1, 2, 3], [3], 'int32') }, /lens: must be \(2\) for x \[2,4,3\], got int32\[3\]/],
    ['mask and lens together', { mask, lens }, /mask and lens exclude each other/],
    ['target codes out of range', { indices: tensorOf([0, 1, 2, 3, 4, 5, 6, 0], [b, n], 'int32') }, /options\.indices \(target codes, i32\[2,4\]\): index 6 at position \[1,2\] \(flat 6\) is outside \[0, 6\)/],
    ['negative target codes other than -1', { indices: tensorOf([0, 1, 2, 3, 4, 5, -2, 0], [b, n], 'int32') }, /options\.indices .*index -2 .*not -1/],
    ['target codes of the wrong shape', { indices: tensorOf([0, 1], [1, 2], 'int32') }, /indices: target codes must be \[2,4\] \(tokens flattened\), got int32\[1,2\]/],
    ['topk 0', { topk: 0 }, /topk: must be an integer in \[1, 6\] \(codebook_size\), got 0/],
    ['topk NaN', { topk: NaN }, /options\.topk must be a finite number, got NaN/],
    ['a non-finite weight tensor', { emaUpdateWeight: tensorOf([1, 1, NaN, 1, 1, 1], [K]) }, /options\.emaUpdateWeight \(f32\[6\]\) is not finite at flat position 2: NaN/],
    ['a weight tensor of the wrong shape', { emaUpdateWeight: tensorOf(new Float32Array(K + 1), [K + 1]) }, /emaUpdateWeight: a weight tensor must be \(1, 6\) or \(6\).*got float32\[7\]/],
    ['an accumulator of the wrong shape', { emaAccum: { clusterSize: tensorOf(new Float32Array(K), [K]), embedSum: tensorOf(new Float32Array(K * d), [1, K, d]) } }, /emaAccum: must be \{ clusterSize: float32\[1,6\], embedSum: float32\[1,6,3\] \}/],
    ['a non-finite accumulator', { emaAccum: { clusterSize: tensorOf([0, 0, Infinity, 0, 0, 0], [1, K]), embedSum: tensorOf(new Float32Array(K * d), [1, K, d]) } }, /options\.emaAccum\.clusterSize .*not finite at flat position 2: Infinity/],
    ['a misspelt option', { lenz: lens }, /options\.lenz is not read by VectorQuantize\.apply/],
    ['key among the options', { key }, /options\.key: key is an argument of applyOnHost \(or applyOnRank\) itself/],
    ['world among the options', { world: { size: 2 } }, /options\.world: not an option: applyOnHost runs one process/],
    ['options that are not an object', [1, 2], /options must be a plain object of VectorQuantize's per-call options/],
    ['a null option', { mask: null }, /options\.mask must be a host tensor .*got null/],
  ])('%s', async (_name, options, want) => {
    const e = await call(options)
    expect(e.kind).not.toBe('internal')
    expect(e.message).toMatch(want)
  })

  it('the boundary refuses what apply would turn into a NaN loss', async () => {
    const bad = tensorOf([0, 1, 2, 3, 4, 5, 6, 0], [b, n], 'int32')
    const through = await traced(backend, q, init, x, true, { bad }, (t) => ({ indices: t['bad'] }))
    expect(Number.isNaN(through.loss.data[0])).toBe(true)
    expect((await call({ indices: bad })).message).toMatch(/options\.indices/)
  })

  it('topk in eval is refused by name, as apply refuses it', async () => {
    expect((await call({ topk: 2 }, false)).message).toMatch(/topk: the reference returns top-k codes only in training/)
  })

  it('an option of another quantizer is refused: FSQ takes no mask', async () => {
    const f = makeFSQ(orThrow(decodeFSQ({ levels: [8, 5, 5] })))
    const fi = f.init(random.keyFromSeed(0))
    const e = await leftOf(f, { ...fi, x: randn([b, n, 3], 1), options: { mask } }, backend)
    expect(e.message).toMatch(/options\.mask is not read by FSQ\.apply/)
  })

  it('ResidualVQ target codes: each layer\'s codebook range, and no -1 (a dropped layer, which the reference asserts against)', async () => {
    const r = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: [6, 4] }))
    const ri = r.init(random.keyFromSeed(0))
    const xr = randn([b, n, 4], 1)
    const targetsOf = (last: number) => tensorOf([...Array.from({ length: b * n * 2 - 1 }, (_, i) => i % 2 === 0 ? 5 : 3), last], [b, n, 2], 'int32')
    const over = await leftOf(r, { ...ri, x: xr, options: { indices: targetsOf(4) } }, backend)
    expect(over.message).toMatch(/options\.indices \(target codes, i32\[2,4,2\]\): index 4 at position \[1,3,1\] \(flat 15\) is outside \[0, 4\)/)
    const dropped = await leftOf(r, { ...ri, x: xr, options: { indices: targetsOf(-1) } }, backend)
    expect(dropped.message).toMatch(/index -1 .*-1 marks a dropped layer: ResidualVQ's target codes must come from a call without quantize dropout/)
  })

  it('a bad ResidualVQ beam width is refused by name', async () => {
    const r = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: K }))
    const ri = r.init(random.keyFromSeed(0))
    const e = await leftOf(r, { ...ri, x: randn([b, n, 4], 1), options: { beamSize: K + 1 } }, backend)
    expect(e.message).toMatch(/beamSize: must be an integer from 1 to the smallest codebook_size \(6\), got 7/)
  })
})
