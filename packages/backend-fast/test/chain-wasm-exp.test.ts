import { fc, test } from '@fast-check/vitest'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import type { WasmRowChainRun } from '../src/wasm/chain-run.js'
import { simdMathModule } from '../src/wasm/simd-math.js'
import { expectSameBits, f32, rowChainOf } from './loop-helpers.js'

/**
 * softmax's exp pass in a chain module (exp(z - max) and its row sum), and the sums after it.
 * Rows of whole vectors run the exp pass as two loops (chain-emit.ts's splitExp: exp only on the
 * vectors with a lane above -104) and the sums after it over those vectors only where the terms
 * of the others are zero (sparsePass); every form must give the plain loops' bits, modelled
 * here: exp and log as simd-math.ts's, row sums in four float64 lanes (lane l adds elements
 * 4v + l in order) combined as (l0 + l2) + (l1 + l3) and rounded once.
 */

const PAGES = 1
const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true })
const simd = new WebAssembly.Instance(simdMathModule(PAGES), { env: { memory } }).exports as Record<'exp' | 'log', (len: number) => void>
/** simd-math.ts's exp or log of each value (at most 16384 of them). */
function simdOf(f: 'exp' | 'log', xs: Float32Array): Float32Array {
  const mem = new Float32Array(memory.buffer)
  mem.set(xs)
  simd[f](Math.ceil(xs.length / 4) * 4)
  return mem.slice(0, xs.length)
}
const expOf = (xs: Float32Array) => simdOf('exp', xs)
/** A float64 sum in four lanes (lane l adds elements 4v + l in order), combined as the module's row sums are. */
const laneSum = (row: Float32Array) => {
  const lanes = [0, 0, 0, 0]
  row.forEach((v, j) => (lanes[j % 4] += v))
  return (lanes[0]! + lanes[2]!) + (lanes[1]! + lanes[3]!)
}

/** The one-loop pass's results for x [n, w]: exp(20 x - max) and its row sums. */
function model(x: Float32Array, n: number, w: number): { e: Float32Array; s: Float32Array } {
  const e = new Float32Array(n * w), s = new Float32Array(n)
  for (let r = 0; r < n; r++) {
    const z = x.subarray(r * w, r * w + w).map((v) => Math.fround(v * 20))
    const m = z.some(Number.isNaN) ? NaN : z.reduce((a, b) => Math.max(a, b), -Infinity)
    const row = expOf(z.map((v) => Math.fround(v - m)))
    e.set(row, r * w)
    s[r] = laneSum(row)
  }
  return { e, s }
}

/**
 * The module's results for softmax(20 x) without the shortcuts: per row, the float64 lane sum of
 * p log(max(p, 1e-5)) (the log of a clamped lane is the float32 of log(1e-5)); per column, the
 * sum over rows of p + shift in float64 partials per block of `rows` rows, added in block order.
 */
function entropyModel(x: Float32Array, n: number, w: number, rows: number, shift: number): { perRow: Float32Array; perColumn: Float32Array } {
  const { e, s } = model(x, n, w)
  const floor = Math.fround(1e-5), logFloor = Math.fround(Math.log(floor))
  const perRow = new Float32Array(n), partials: Float64Array[] = []
  for (let r = 0; r < n; r++) {
    const p = e.subarray(r * w, r * w + w).map((v) => Math.fround(v / s[r]!))
    const logs = simdOf('log', p).map((l, j) => (p[j]! <= floor ? logFloor : l))
    perRow[r] = laneSum(p.map((v, j) => Math.fround(v * logs[j]!)))
    if (r % rows === 0) partials.push(new Float64Array(w))
    const part = partials[partials.length - 1]!
    p.forEach((v, j) => (part[j]! += shift === 0 ? v : Math.fround(v + Math.fround(shift))))
  }
  const perColumn = new Float32Array(w).map((_, j) => partials.reduce((a, part) => a + part[j]!, 0))
  return { perRow, perColumn }
}

const SPECIAL = [-Infinity, Infinity, NaN, -0, 0, 1e-40]
/** Values whose exp arguments (20 x - max, the max near 0) fall below -104 (+0), near it (subnormal or +0) or above. */
const value = fc.oneof(fc.double({ min: -8, max: -5.25, noNaN: true }), fc.double({ min: -5.25, max: -4.3, noNaN: true }), fc.double({ min: -4.3, max: 0, noNaN: true }))

describe('the exp pass of a chain module', () => {
  test.prop(
    [fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 70 }), fc.array(value, { minLength: 64, maxLength: 64 }), fc.integer({ min: 0, max: 999 })],
    { numRuns: 60 },
  )('exp(z - max) and its row sum: the one-loop pass\'s bits, split into two loops for rows of whole vectors', async (n, w, pool, seed) => {
    const p = traceOrThrow([f32([n, w])], (x: Tensor) => {
      const z = x.mul(20)
      const e = z.sub(z.max(-1, true)).exp()
      return [e, e.sum(-1)]
    }).program
    // vectors whose every lane's exp is +0, vectors with subnormal and +0 lanes, some specials
    const x = Float32Array.from({ length: n * w }, (_, i) => pool[(i * 7 + seed) % 64]!)
    for (let i = seed % 5; i < x.length; i += 17 + (seed % 23)) x[i] = SPECIAL[(i + seed) % SPECIAL.length]!
    const ex = fastBackend({ threads: 1, blockRows: 1 + (seed % 4) }).compile(p)
    const chain = rowChainOf(ex) as unknown as WasmRowChainRun
    expect(chain.codegen).toBe('wasm')
    expect(chain.splitExpPasses).toBe(w % 4 === 0 ? 1 : 0)
    const got = await ex.run([tensorOf(x, [n, w])])
    const want = model(x, n, w)
    expectSameBits(got, [{ shape: [n, w], dtype: 'float32', data: want.e }, { shape: [n], dtype: 'float32', data: want.s }], `n=${n} w=${w}`)
    ex.dispose()
  })
})

describe('sums after the exp pass of a chain module', () => {
  test.prop(
    [fc.integer({ min: 1, max: 30 }), fc.integer({ min: 1, max: 70 }), fc.array(value, { minLength: 64, maxLength: 64 }), fc.constantFrom(0, 0, 1e-3), fc.integer({ min: 0, max: 999 })],
    { numRuns: 60 },
  )('entropy terms and column sums of softmax: the full loop\'s bits, skipping the vectors of +0 where every term of +0 is zero', async (n, w, pool, shift, seed) => {
    const p = traceOrThrow([f32([n, w])], (x: Tensor) => {
      const prob = x.mul(20).softmax(-1)
      // with a shift, a vector of +0 probabilities adds to the column sums: no vector may be skipped
      return [prob.mul(prob.maximum(1e-5).log()).sum(-1), (shift === 0 ? prob : prob.add(shift)).sum(0)]
    }).program
    const x = Float32Array.from({ length: n * w }, (_, i) => pool[(i * 7 + seed) % 64]!)
    for (let i = seed % 5; i < x.length; i += 29 + (seed % 23)) x[i] = SPECIAL[(i + seed) % SPECIAL.length]!
    const ex = fastBackend({ threads: 1, blockRows: 1 + (seed % 4) }).compile(p)
    const chain = rowChainOf(ex) as unknown as WasmRowChainRun
    expect(chain.codegen).toBe('wasm')
    expect([chain.splitExpPasses, chain.sparsePasses]).toEqual(w % 4 === 0 ? [1, 1] : [0, 0])
    const got = await ex.run([tensorOf(x, [n, w])])
    const want = entropyModel(x, n, w, chain.rows, shift)
    expectSameBits(got, [{ shape: [n], dtype: 'float32', data: want.perRow }, { shape: [w], dtype: 'float32', data: want.perColumn }], `n=${n} w=${w} shift=${shift}`)
    ex.dispose()
  })
})
