import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { decodeFSQ } from '../src/fsq/config.js'
import { makeFSQ } from '../src/fsq/fsq.js'
import { applyOnHost } from '../src/run.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn, runOnHost, snapshot } from './helpers.js'

const layouts = ['bnd', 'cf3', 'image', 'video'] as const
type Layout = (typeof layouts)[number]

function inputShape(layout: Layout, b: number, dim: number): number[] {
  switch (layout) {
    case 'bnd': return [b, 3, dim]
    case 'cf3': return [b, dim, 3]
    case 'image': return [b, dim, 2, 3]
    case 'video': return [b, dim, 2, 1, 2]
  }
}

const levelsArb = fc.array(fc.integer({ min: 2, max: 8 }), { minLength: 1, maxLength: 4 })
const fsqOptionsArb = fc.record({
  levels: levelsArb,
  preserve: fc.boolean(),
  numCodebooks: fc.integer({ min: 1, max: 2 }),
  extraDim: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
  hard: fc.boolean(),
  rotation: fc.boolean(),
})

const buildFSQ = (o: { levels: number[]; preserve: boolean; numCodebooks: number; extraDim?: number; hard: boolean; rotation: boolean }, channelFirst = false) =>
  makeFSQ(
    orThrow(
      decodeFSQ({
        levels: o.levels,
        preserve_symmetry: o.preserve || o.levels.includes(2),
        num_codebooks: o.numCodebooks,
        ...(o.extraDim ? { dim: o.extraDim } : {}),
        bound_hard_clamp: o.hard,
        orthogonal_rotation: o.rotation,
        channel_first: channelFirst,
      }),
    ),
  )

describe.each(backends.map((b) => [b.name, b] as const))('FSQ on %s', (_name, backend) => {
  test.prop([fsqOptionsArb, fc.constantFrom(...layouts), fc.integer({ min: 1, max: 2 }), fc.nat(1000)], { numRuns: 40 })(
    'shapes for every layout and indicesToCodes(indices) == quantized',
    async (o, layout, b, seed) => {
      const q = buildFSQ(o, layout === 'cf3')
      const init = q.init(random.keyFromSeed(seed))
      const x = randn(inputShape(layout, b, q.config.dim), seed, 2)
      const before = { p: snapshot(init.params), s: snapshot(init.state) }
      const r = await applyQ(backend, q, init, x)
      expect(r.quantized.shape).toEqual(x.shape)
      const spatial = layout === 'bnd' ? [3] : x.shape.slice(2)
      expect(r.indices.shape).toEqual([b, ...spatial, ...(q.config.keep_num_codebooks_dim ? [q.config.num_codebooks] : [])])
      expect(r.indices.dtype).toBe('int32')
      for (const v of arr(r.indices)) expect(v >= 0 && v < q.config.codebook_size).toBe(true)
      // codes lie in [-1, 1] (before an orthogonal rotation turns them back)
      if (!o.rotation) for (const v of arr(r.extra['codes']!)) expect(Math.abs(v) <= 1).toBe(true)
      expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
      // apply is pure: nothing it was given changed
      expect({ p: snapshot(init.params), s: snapshot(init.state) }).toEqual(before)
    },
  )

  test.prop([levelsArb, fc.nat(1000)], { numRuns: 40 })('preserve_symmetry: q(-x) = -q(x) away from level boundaries; symmetric code set', async (levels, seed) => {
    const q = makeFSQ(orThrow(decodeFSQ({ levels, preserve_symmetry: true })))
    const init = q.init(random.keyFromSeed(seed))
    const d = levels.length
    const x = randn([1, 8, d], seed, 1.5)
    // drop elements whose bracket (L-1)(tanh x + 1)/2 + 0.5 is within 1e-3 of an integer (a level boundary)
    const data = Float32Array.from(x.data, (v, i) => {
      const L = levels[i % d]!
      const br = ((L - 1) * (Math.tanh(v) + 1)) / 2 + 0.5
      return Math.abs(br - Math.round(br)) < 1e-3 ? 0.0123 : v
    })
    const xs = tensorOf(data, x.shape)
    const neg = tensorOf(Float32Array.from(data, (v) => -v), x.shape)
    const a = await applyQ(backend, q, init, xs)
    const b = await applyQ(backend, q, init, neg)
    expectClose(b.quantized, tensorOf(Float32Array.from(a.quantized.data, (v) => -v), x.shape), 1e-6)
    const cb = init.state['implicit_codebook']!
    for (let i = 0; i < d; i++) {
      const vals = [...new Set(Array.from({ length: cb.shape[0]! }, (_, k) => cb.data[k * d + i]!))].sort((p, r) => p - r)
      expect(vals.length).toBe(levels[i])
      vals.forEach((v, j) => expect(Math.abs(v + vals[vals.length - 1 - j]!)).toBeLessThan(1e-6))
    }
  })

  test.prop([levelsArb, fc.boolean(), fc.nat(1000)], { numRuns: 40 })('with bound_hard_clamp, quantizing a code gives the code back (idempotence)', async (levels, preserve, seed) => {
    const q = makeFSQ(orThrow(decodeFSQ({ levels, preserve_symmetry: preserve || levels.includes(2), bound_hard_clamp: true })))
    const init = q.init(random.keyFromSeed(seed))
    const once = await applyQ(backend, q, init, randn([2, 5, levels.length], seed, 3))
    const twice = await applyQ(backend, q, init, once.quantized)
    const plus0 = (t: HostTensor) => arr(t).map((v) => v + 0) // -0 and +0 are the same code
    expect(plus0(twice.quantized)).toEqual(plus0(once.quantized))
    expect(arr(twice.indices)).toEqual(arr(once.indices))
  })

  test.prop([levelsArb, fc.boolean()], { numRuns: 25 })('index <-> code is a bijection over the implicit codebook', async (levels, preserve) => {
    const q = makeFSQ(orThrow(decodeFSQ({ levels, preserve_symmetry: preserve || levels.includes(2) })))
    const init = q.init(random.keyFromSeed(1))
    const K = q.config.codebook_size
    const all = tensorOf(Int32Array.from({ length: K }, (_, k) => k), [K], 'int32')
    const r = orThrow(
      await runOnHost(backend, [all, init.state['implicit_codebook']!] as const, (i, cb) => {
        const codes = q.indicesToRawCodes(i as Tensor)
        return { back: q.codesToIndices(codes), fromCb: q.codesToIndices(cb as Tensor), codes, levels: q.indicesToLevelIndices(i as Tensor) }
      }),
    )
    expect(arr(r.back)).toEqual(arr(all))
    expect(arr(r.fromCb)).toEqual(arr(all))
    expect(arr(r.codes)).toEqual(arr(init.state['implicit_codebook']!))
    // dimension 0 is the least significant digit
    const lv = arr(r.levels)
    for (let k = 0; k < K; k++) expect(lv[k * levels.length]).toBe(k % levels[0]!)
    expect(new Set(Array.from({ length: K }, (_, k) => lv.slice(k * levels.length, (k + 1) * levels.length).join(','))).size).toBe(K)
  })

  test.prop([fc.nat(1000)], { numRuns: 15 })('noise_dropout: training perturbs codes with an explicit key; indices come before the noise', async (seed) => {
    const q = makeFSQ(orThrow(decodeFSQ({ levels: [5, 5, 3], preserve_symmetry: true, noise_dropout: 0.5 })))
    const init = q.init(random.keyFromSeed(seed))
    const x = randn([2, 6, 3], seed)
    const evalR = await applyQ(backend, q, init, x)
    const t1 = await applyQ(backend, q, init, x, { training: true, key: [seed, 1] })
    const t1b = await applyQ(backend, q, init, x, { training: true, key: [seed, 1] })
    const t2 = await applyQ(backend, q, init, x, { training: true, key: [seed, 2] })
    expect(arr(t1.indices)).toEqual(arr(evalR.indices))
    expect(arr(t1.quantized)).toEqual(arr(t1b.quantized))
    expect(arr(t1.quantized)).not.toEqual(arr(evalR.quantized))
    expect(arr(t1.quantized)).not.toEqual(arr(t2.quantized))
    for (const v of arr(t1.quantized)) expect(Math.abs(v) <= 1).toBe(true)
    const noKey = await applyOnHost(q, { ...init, x, training: true }, backend)
    expect(E.isLeft(noKey) && noKey.left.message).toMatch(/needs a random key/)
  })

  test('inputs of the wrong rank or last dimension are a Left naming both shapes', async () => {
    const q = makeFSQ(orThrow(decodeFSQ({ levels: [8, 5, 5] })))
    const init = q.init(random.keyFromSeed(0))
    const bad = await applyOnHost(q, { ...init, x: randn([2, 4, 4], 0) }, backend)
    expect(E.isLeft(bad) && bad.left.kind).toBe('shape')
    expect(E.isLeft(bad) && bad.left.message).toMatch(/last dimension 4; expected dim 3/)
    const bad2 = await applyOnHost(q, { ...init, x: randn([4, 3], 0) }, backend)
    expect(E.isLeft(bad2) && bad2.left.message).toMatch(/\(b, n, d\)/)
  })
})

export type { HostTensor }
