import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import { bitTreePairs } from '../src/wasm/chain-bittree.js'
import type { WasmRowChainRun } from '../src/wasm/chain-run.js'
import { expectSameBits, f32, rowChainOf, runUntilShared, values } from './loop-helpers.js'

/**
 * The bit-tree form of a chain module's matmul (wasm/chain-bittree.ts): for codebooks whose
 * column t holds two values picked by bit (dim-1-t) of the code (LFQ's, at any scale), the same
 * bits as the plain form and the reference's logits; codebooks that differ in one element take
 * the plain form.
 */

/** Logits (an output, so they can be compared bit for bit), softmax entropy terms and each row's largest probability. */
const program = (n: number, dim: number): Program =>
  traceOrThrow([f32([n, dim]), f32([2 ** dim, dim])], (x: Tensor, cb: Tensor) => {
    const logits = x.matmul(cb.mT)
    const prob = logits.mul(-2).mul(-10).softmax(-1)
    const entropy = (p: Tensor, axis: number | undefined) => p.mul(p.maximum(1e-5).log()).sum(axis).neg()
    return [logits, entropy(prob, -1).mean(), entropy(prob.mean(0), undefined), prob.max(-1)]
  }).program

/** Row j, column t: hi[t] when bit (dim-1-t) of j is set, else lo[t] (LFQ's codebook with hi = scale, lo = -scale). */
const treeCodebook = (dim: number, lo: readonly number[], hi: readonly number[]): Float32Array => {
  const cb = new Float32Array(2 ** dim * dim)
  for (let j = 0; j < 2 ** dim; j++) for (let t = 0; t < dim; t++) cb[j * dim + t] = (j >> (dim - 1 - t)) & 1 ? hi[t]! : lo[t]!
  return cb
}

const SPECIAL = [0, -0, NaN, Infinity, -Infinity, 1e-40, -3e-39, 2 ** -126, 3.4e38]
/** Codebook values: mostly ordinary floats, sometimes a special one. */
const cbValue = fc.oneof({ arbitrary: fc.double({ min: -4, max: 4, noNaN: true }), weight: 6 }, { arbitrary: fc.constantFrom(...SPECIAL), weight: 1 })

/** Inputs in (-1.5, 1.5) with some special values (zeros, subnormals, infinities, NaN) at seeded places. */
const inputs = (n: number, dim: number, seed: number, specials: boolean): Float32Array => {
  const x = Float32Array.from(values(n * dim, seed))
  if (specials) for (let i = seed % 7; i < x.length; i += 13 + (seed % 5)) x[i] = SPECIAL[(i + seed) % SPECIAL.length]!
  return x
}

const chainOf = (ex: unknown) => rowChainOf(ex as never) as unknown as WasmRowChainRun

/** Runs `p` on `ins` with the tree form allowed and with it off; returns both (and the forms taken). */
async function bothForms(p: Program, ins: HostTensor[], threads: number) {
  const ex = fastBackend({ threads, blockRows: 3 }).compile(p)
  const chain = chainOf(ex)
  expect(chain.codegen).toBe('wasm')
  const tree = await ex.run(ins)
  const treeForm = chain.form
  chain.bitTree = false
  const plain = await ex.run(ins)
  const plainForm = chain.form
  ex.dispose()
  return { tree, plain, treeForm, plainForm }
}

describe('bit-tree matmul in a chain module', () => {
  test.prop(
    [fc.integer({ min: 9, max: 41 }), fc.integer({ min: 2, max: 7 }), fc.array(cbValue, { minLength: 14, maxLength: 14 }), fc.boolean(), fc.integer({ min: 0, max: 999 })],
    { numRuns: 60 },
  )('LFQ-shaped codebooks with any two values per column: the plain form\'s bits, the reference\'s logits', async (n, dim, vals, specials, seed) => {
    const p = program(n, dim)
    const cb = treeCodebook(dim, vals.slice(0, dim), vals.slice(7, 7 + dim))
    const ins = [tensorOf(inputs(n, dim, seed, specials), [n, dim]), { shape: [2 ** dim, dim], dtype: 'float32', data: cb } as HostTensor]
    const { tree, plain, treeForm, plainForm } = await bothForms(p, ins, 1)
    expect([treeForm, plainForm]).toEqual(['bitTree', 'plain'])
    expectSameBits(tree, plain, `n=${n} dim=${dim}`)
    expectSameBits([tree[0]!], [interpretProgram(p, ins)[0]!], `logits n=${n} dim=${dim}`)
  })

  test.prop(
    [fc.integer({ min: 9, max: 23 }), fc.integer({ min: 2, max: 6 }), fc.double({ min: 0.01, max: 3, noNaN: true }), fc.nat(), fc.nat(), fc.integer({ min: 0, max: 999 })],
    { numRuns: 40 },
  )('a codebook with one element changed (the other value, -0 for +0, the next float) takes the plain form, the reference\'s logits', async (n, dim, scale64, at, how, seed) => {
    const p = program(n, dim)
    const scale = Math.fround(scale64)
    const cb = treeCodebook(dim, Array(dim).fill(dim % 2 ? 0 : -scale), Array(dim).fill(scale))
    const i = at % cb.length
    const old = cb[i]!
    const other = old === scale ? (dim % 2 ? 0 : -scale) : scale
    cb[i] = [other, Object.is(old, 0) ? -0 : -old, Math.fround(old * (1 + 2 ** -22)) || 1e-45][how % 3]!
    // the chain's operand is the codebook transposed: element (t, j) is cb[j][t]
    expect(bitTreePairs(cb.map((_, i) => cb[(i % 2 ** dim) * dim + Math.floor(i / 2 ** dim)]!), dim)).toBeUndefined()
    const ins = [tensorOf(inputs(n, dim, seed, false), [n, dim]), { shape: [2 ** dim, dim], dtype: 'float32', data: cb } as HostTensor]
    const ex = fastBackend({ threads: 1, blockRows: 4 }).compile(p)
    const got = await ex.run(ins)
    expect(chainOf(ex).form).toBe('plain')
    expectSameBits([got[0]!], [interpretProgram(p, ins)[0]!], `logits n=${n} dim=${dim}`)
    ex.dispose()
  })

  test('on 2 threads (worker threads taking blocks): the same bits as the plain form on 1', async () => {
    // 4096 x 128 logits: heavy enough for the chain to take a worker thread
    const n = 4096, dim = 7
    const p = program(n, dim)
    const cb = treeCodebook(dim, Array(dim).fill(-0.25), Array(dim).fill(0.25))
    const ins = [tensorOf(inputs(n, dim, 5, true), [n, dim]), { shape: [2 ** dim, dim], dtype: 'float32', data: cb } as HostTensor]
    const one = fastBackend({ threads: 1, blockRows: 64 }).compile(p)
    chainOf(one).bitTree = false
    const want = await one.run(ins)
    const two = fastBackend({ threads: 2, blockRows: 64 }).compile(p)
    expect(chainOf(two).threads).toBe(2)
    expect(await runUntilShared(two, ins, want)).toBe(true)
    expect(chainOf(two).form).toBe('bitTree')
    // a later call with a codebook that has no tree form, then one that has it again
    const cb2 = cb.slice()
    cb2[5] = 0.5
    const ins2 = [ins[0]!, { ...ins[1]!, data: cb2 } as HostTensor]
    expectSameBits(await two.run(ins2), await one.run(ins2), 'plain codebook')
    expect(chainOf(two).form).toBe('plain')
    expectSameBits(await two.run(ins), want, 'tree codebook again')
    expect(chainOf(two).form).toBe('bitTree')
    one.dispose()
    two.dispose()
  })

  test('bitTreePairs: the pairs of a [k, 2^k] operand; undefined for other shapes or one element off', () => {
    const k = 3, w = 8
    const b = new Float32Array(k * w)
    for (let t = 0; t < k; t++) for (let j = 0; j < w; j++) b[t * w + j] = (j >> (k - 1 - t)) & 1 ? t + 1 : -0
    expect(Array.from(bitTreePairs(b, k)!)).toEqual([-0, 1, -0, 2, -0, 3])
    expect(bitTreePairs(b.subarray(0, 16), 2)).toBeUndefined()
    expect(bitTreePairs(new Float32Array(2), 1)).toBeUndefined()
    for (let i = 0; i < b.length; i++) {
      const c = b.slice()
      c[i] = Object.is(c[i], -0) ? 0 : -0
      expect(bitTreePairs(c, k)).toBeUndefined()
    }
    // NaN values compare as bits: the same NaN is one value
    const nan = b.slice()
    for (let j = 0; j < w; j++) if ((j >> 2) & 1) nan[j] = NaN
    expect(bitTreePairs(nan, k)![1]).toBeNaN()
  })
})
