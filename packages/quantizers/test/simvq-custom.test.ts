import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { TesseraError, linear, random, tensorOf, valueAndGrad } from '@tessera/core'
import { decodeSimVQ, makeSimVQ, simVQ } from '../src/simvq/simvq.js'
import { decodeResidualSimVQ, residualSimVQ } from '../src/simvq/residual-simvq.js'
import { linearStage } from '../src/sequential/sequential.js'
import type { Named } from '../src/quantizer.js'
import { applyOnHost } from '../src/run.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn, runOnHost } from './helpers.js'

/** Rows scaled to unit length: an init_fn a user might pass. */
const unitRows = (t: HostTensor): HostTensor => {
  const [k, d] = t.shape as [number, number]
  const out = new Float32Array(k * d)
  for (let i = 0; i < k; i++) {
    let n = 0
    for (let j = 0; j < d; j++) n += t.data[i * d + j]! ** 2
    for (let j = 0; j < d; j++) out[i * d + j] = t.data[i * d + j]! / Math.sqrt(n)
  }
  return tensorOf(out, [k, d])
}

describe.each(backends.map((b) => [b.name, b] as const))('SimVQ custom transform and init_fn on %s', (_name, backend) => {
  test.prop([fc.integer({ min: 2, max: 5 }), fc.integer({ min: 2, max: 5 }), fc.integer({ min: 2, max: 12 }), fc.nat(1000)], { numRuns: 20 })(
    'a stage as codebook_transform: parameters under code_transform., the nearest transformed code, decode == quantized in eval',
    async (dim, fd, K, seed) => {
      const q = orThrow(simVQ({ dim, codebook_size: K, frozen_codebook_dim: fd, codebook_transform: linearStage(fd, dim, true) }))
      expect(Object.keys(q.paramSpecs).sort()).toEqual(['code_transform.bias', 'code_transform.weight'])
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 5, dim], seed)
      const r = await applyQ(backend, q, init, x)
      const cb = orThrow(await runOnHost(backend, [init.params, init.state] as const, (p, s) =>
        linear(s['frozen_codebook'] as Tensor, { weight: p['code_transform.weight'] as Tensor, bias: p['code_transform.bias'] as Tensor })))
      const c = arr(cb)
      arr(r.indices).forEach((k, t) => {
        const dist = (j: number) => Array.from({ length: dim }, (_, i) => (x.data[t * dim + i]! - c[j * dim + i]!) ** 2).reduce((a, b) => a + b, 0)
        for (let j = 0; j < K; j++) expect(dist(k)).toBeLessThanOrEqual(dist(j) + 1e-5)
        for (let i = 0; i < dim; i++) expect(r.quantized.data[t * dim + i]).toBe(c[k * dim + i])
      })
      expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
      // training: gradients reach the stage's parameters
      const g = orThrow(await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) =>
        valueAndGrad((pp: Named<Tensor>, ss: Named<Tensor>, xx: Tensor) => q.apply(pp, ss, xx, { training: true }).loss)(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor)))
      const grad = g.grad as unknown as Record<string, HostTensor>
      expect(arr(grad['code_transform.weight']!).some((v) => v !== 0)).toBe(true)
    },
  )

  test.prop([fc.integer({ min: 2, max: 6 }), fc.nat(1000)], { numRuns: 15 })('init_fn reshapes the frozen codebook of the same draw; a parameterless function transform', async (dim, seed) => {
    const plain = orThrow(simVQ({ dim, codebook_size: 8 }))
    const q = orThrow(simVQ({ dim, codebook_size: 8, init_fn: unitRows, codebook_transform: (c: Tensor) => c.mul(2) }))
    expect(Object.keys(q.paramSpecs)).toEqual([])
    const a = plain.init(random.keyFromSeed(seed))
    const b = q.init(random.keyFromSeed(seed))
    expect(arr(b.state['frozen_codebook']!)).toEqual(arr(unitRows(a.state['frozen_codebook']!)))
    const r = await applyQ(backend, q, b, randn([1, 4, dim], seed))
    const cb = orThrow(await runOnHost(backend, [b.params, b.state] as const, (p, s) => q.codebook(p as Named<Tensor>, s as Named<Tensor>)))
    expect(arr(cb)).toEqual(arr(b.state['frozen_codebook']!).map((v) => Math.fround(v * 2)))
    for (const v of arr(r.quantized)) expect(arr(cb)).toContain(v)
  })

  test('a transform of the wrong shape is a shape Left naming codebook_transform; a wrong init_fn result throws naming init_fn', async () => {
    const bad = orThrow(simVQ({ dim: 4, codebook_size: 8, codebook_transform: (c: Tensor) => c.sum(-1, true) }))
    const init = bad.init(random.keyFromSeed(0))
    const r = await applyOnHost(bad, { ...init, x: randn([1, 2, 4], 0) }, backend)
    expect(E.isLeft(r) && [r.left.kind, r.left.where]).toEqual(['shape', 'SimVQ.codebook_transform'])
    const wrongInit = orThrow(simVQ({ dim: 4, codebook_size: 8, init_fn: () => tensorOf([1, 2], [2]) }))
    expect(() => wrongInit.init(random.keyFromSeed(0))).toThrow(TesseraError)
    expect(() => wrongInit.init(random.keyFromSeed(0))).toThrow(/SimVQ.init_fn|float32 \[8,4\]/)
  })

  test('ResidualSimVQ passes init_fn to every layer', () => {
    const q = orThrow(residualSimVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, init_fn: unitRows }))
    const s = q.init(random.keyFromSeed(1)).state
    for (const k of ['layers.0.frozen_codebook', 'layers.1.frozen_codebook']) {
      const t = s[k]!
      for (let i = 0; i < 8; i++) expect(Math.hypot(...Array.from(t.data.slice(i * 4, i * 4 + 4)))).toBeCloseTo(1, 5)
    }
  })

  test.prop([fc.nat(1000)], { numRuns: 10 })('ResidualSimVQ shares one custom transform across layers (stored under layers.0.), as the reference shares its module', async (seed) => {
    const q = orThrow(residualSimVQ({ dim: 4, codebook_size: 8, num_quantizers: 3, codebook_transform: linearStage(4, 4, true) }))
    expect(Object.keys(q.paramSpecs).sort()).toEqual(['layers.0.code_transform.bias', 'layers.0.code_transform.weight'])
    const init = q.init(random.keyFromSeed(seed))
    expect(Object.keys(init.params).sort()).toEqual(Object.keys(q.paramSpecs).sort())
    const x = randn([2, 5, 4], seed)
    const r = await applyQ(backend, q, init, x)
    // layer by layer with one SimVQ and layer 0's parameters
    const layer = orThrow(simVQ({ dim: 4, codebook_size: 8, codebook_transform: linearStage(4, 4, true) }))
    const want = orThrow(await runOnHost(backend, [init.params, init.state, x] as const, (p, st, xs) => {
      const P = { 'code_transform.weight': p['layers.0.code_transform.weight'] as Tensor, 'code_transform.bias': p['layers.0.code_transform.bias'] as Tensor }
      let residual = xs as Tensor
      let sum = residual.mul(0)
      for (let l = 0; l < 3; l++) {
        const out = layer.apply(P, { frozen_codebook: st[`layers.${l}.frozen_codebook`] as Tensor }, residual, { training: false })
        sum = sum.add(out.quantized)
        residual = residual.sub(out.quantized)
      }
      return sum
    }))
    expectClose(r.quantized, want, 1e-6)
    expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-5)
  })
})

describe('SimVQ codebook_transform and init_fn config', () => {
  test.each([
    ['codebook_transform', 3],
    ['codebook_transform', 'linear'],
    ['codebook_transform', { apply: 1 }],
    ['init_fn', 'uniform'],
    ['init_fn', {}],
  ])('%s: %j is a config Left naming the field', (field, v) => {
    const r = decodeSimVQ({ dim: 4, codebook_size: 8, [field]: v })
    expect(E.isLeft(r) && [r.left.kind, r.left.where]).toEqual(['config', `SimVQ.${field}`])
  })
  test('default: the reference linear transform and the identity init, bit-identical to before', () => {
    const c = orThrow(decodeSimVQ({ dim: 4, codebook_size: 8 }))
    expect([c.codebook_transform, c.init_fn]).toEqual([null, null])
    expect(Object.keys(makeSimVQ(c).paramSpecs)).toEqual(['code_transform.weight'])
  })
})
