import { fc, test } from '@fast-check/vitest'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import type { WasmRowChainRun } from '../src/wasm/chain-run.js'
import { simdMathModule } from '../src/wasm/simd-math.js'
import { expectSameBits, f32, rowChainOf } from './loop-helpers.js'

/**
 * softmax's exp pass in a chain module (exp(z - max) and its row sum). Rows of whole vectors run
 * it as two loops (chain-emit.ts's splitExp: exp only on the vectors with a lane above -104);
 * both forms must give the one-loop pass's bits, modelled here: each exp as simd-math.ts's,
 * the row sum in four float64 lanes (lane l adds elements 4v + l in order), combined as
 * (l0 + l2) + (l1 + l3) and rounded once.
 */

const PAGES = 1
const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true })
const simdExp = new WebAssembly.Instance(simdMathModule(PAGES), { env: { memory } }).exports['exp'] as (len: number) => void
/** simd-math.ts's exp of each value (at most 16384 of them). */
function expOf(xs: Float32Array): Float32Array {
  const mem = new Float32Array(memory.buffer)
  mem.set(xs)
  simdExp(Math.ceil(xs.length / 4) * 4)
  return mem.slice(0, xs.length)
}

/** The one-loop pass's results for x [n, w]: exp(20 x - max) and its row sums. */
function model(x: Float32Array, n: number, w: number): { e: Float32Array; s: Float32Array } {
  const e = new Float32Array(n * w), s = new Float32Array(n)
  for (let r = 0; r < n; r++) {
    const z = x.subarray(r * w, r * w + w).map((v) => Math.fround(v * 20))
    const m = z.some(Number.isNaN) ? NaN : z.reduce((a, b) => Math.max(a, b), -Infinity)
    const row = expOf(z.map((v) => Math.fround(v - m)))
    e.set(row, r * w)
    const lanes = [0, 0, 0, 0]
    row.forEach((v, j) => (lanes[j % 4] += v))
    s[r] = (lanes[0]! + lanes[2]!) + (lanes[1]! + lanes[3]!)
  }
  return { e, s }
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
