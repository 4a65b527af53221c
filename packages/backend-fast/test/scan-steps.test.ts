import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { concat, runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { reduceScan } from '../src/wasm/reduce-scan.js'

const F32_MAX = 3.4028234663852886e38
const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
const SPECIAL = [NaN, Infinity, -Infinity, -0, 0, 1e-45, -1e-40, F32_MAX, -F32_MAX, 1, -1]

/** Random float32 values with specials mixed in at rate `p` (0: none). */
const values = (n: number, seed: number, p: number): Float32Array => {
  let s = seed >>> 0
  const r = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), s / 2 ** 32)
  return Float32Array.from({ length: n }, () => (r() < p ? SPECIAL[Math.floor(r() * SPECIAL.length)]! : (r() - 0.5) * 8))
}
const ins = (p: Program, seed: number, rate: number): HostTensor[] =>
  p.inputs.map((v, i) => tensorOf(Array.from(values(v.aval.shape.reduce((a, b) => a * b, 1), seed + i, rate)), [...v.aval.shape]))

/** The reference's argmin: the first NaN, else the first least element (-0 and +0 tie). */
const refArgmin = (x: Float32Array) => {
  let bi = -1, best = 0
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!
    if (v !== v) return i
    if (bi < 0 || v < best) ((best = v), (bi = i))
  }
  return bi
}

/** Fast (threads 1) against the reference, bit for bit, and how many steps took a scan kernel. */
async function sameBits(p: Program, inputs: HostTensor[]): Promise<number> {
  const want = interpretProgram(p, inputs)
  const got = await runOrThrow(p, inputs, fastBackend({ threads: 1 }))
  got.forEach((g, i) => {
    expect(g.shape).toEqual(want[i]!.shape)
    expect(Array.from(g.data).map(String)).toEqual(Array.from(want[i]!.data).map(String))
  })
  return planProgram(p, { wasm: true, threads: 1 }).steps.filter((s) => s.kind === 'kernel' && s.kernel.source.startsWith('/*')).length
}

describe('WebAssembly scans (finite check, finite mask, argmin)', () => {
  // lengths across the 16-float padding and the 65536-float chunk; specials from none to most
  test.prop([fc.oneof(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 65530, max: 65600 }), fc.constant(131073)), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 1e-5, 0.05, 0.7)], {
    numRuns: 60,
  })('equal their definitions, with NaN, ±Inf, -0 and subnormals', (n, seed, rate) => {
    const sc = reduceScan()
    const x = values(n, seed, rate)
    expect(sc.allFinite(x)).toBe(x.every(Number.isFinite) ? 1 : 0)
    const out = new Float32Array(n).fill(7)
    sc.flags(x, out)
    expect(Array.from(out)).toEqual(Array.from(x, (v) => (Number.isFinite(v) ? 1 : 0)))
    expect(sc.argmin(x)).toBe(refArgmin(x))
  })

  // widths off the 8-column group, matrices across the 65536-float chunk (rows split between calls)
  test.prop([fc.integer({ min: 1, max: 300 }), fc.oneof(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 250, max: 1100 }), fc.constant(8192)), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0.01, 0.5)], {
    numRuns: 40,
  })('column sums equal the generated loop\'s: rows added in order in float64 from +0, rounded once', (rows, cols, seed, rate) => {
    const a = values(rows * cols, seed, rate)
    const want = new Float32Array(cols)
    for (let j = 0; j < cols; j++) {
      let t = 0
      for (let i = 0; i < rows; i++) t += a[i * cols + j]!
      want[j] = t
    }
    const out = new Float32Array(cols).fill(7)
    reduceScan().columnSums(a, rows, cols, out)
    // bits, with any NaN as NaN (JS itself does not keep a NaN's sign between its tiers)
    const bits = (x: Float32Array) => Array.from(new Uint32Array(x.buffer), (b, i) => (x[i] !== x[i] ? 'NaN' : b))
    expect(bits(out)).toEqual(bits(want))
  })

  test('argmin edge cases: the first of tied -0 and +0, a NaN after the least value, all +Inf, one element, least in a later chunk', () => {
    const sc = reduceScan()
    const cases: number[][] = [[3, 0, -0, 0], [3, -0, 0, -1, -1], [5, -2, 1, NaN, -3], [Infinity, Infinity, Infinity], [NaN], [2]]
    for (const c of cases) expect(sc.argmin(Float32Array.from(c))).toBe(refArgmin(Float32Array.from(c)))
    const long = new Float32Array(200000).fill(1)
    long[150001] = -5
    long[190000] = -5
    expect(sc.argmin(long)).toBe(150001)
    long[199999] = NaN
    expect(sc.argmin(long)).toBe(199999)
  })
})

describe('scan steps in a plan give the reference bits', () => {
  test.prop([fc.integer({ min: 1, max: 40 }), fc.integer({ min: 2, max: 50 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0.002, 0.3)], { numRuns: 40 })(
    "the quantizers' finite probe (all-finite flags, argmin of the concatenation folded) on odd sizes",
    async (m, n, seed, rate) => {
      const p = traceOrThrow([f32([m, n]), f32([n, 3]), f32([64, 67]), f32([5])], (x: Tensor, w: Tensor, big: Tensor, v: Tensor) => {
        const mask = (t: Tensor) => t.abs().le(F32_MAX).cast('float32')
        // a new value large enough for the WebAssembly elementwise pass, checked from its buffer (an optimizer step's new parameters)
        const big2 = big.mul(2)
        // nested concats as concatTree makes them; a plain part (v, maybe NaN) after the flags
        const first = concat([mask(x).reshape([-1]), mask(w).min().reshape([1]), v.mul(1)], 0)
        const parts = [first, concat([mask(big2).min().reshape([1]), x.builder.full([1], 0)], 0)]
        return [concat(parts, 0).argmin(0), big2]
      }).program
      // two all-finite flags and the folded argmin; the mask and the concats are never stored
      expect(await sameBits(p, ins(p, seed, rate))).toBe(3)
      const steps = planProgram(p, { wasm: true, threads: 1 }).steps
      expect(steps.filter((s) => (s.kind === 'kernel' && s.prim === 'concat') || (s.kind === 'reference' && s.eqn.prim === 'concat')).length).toBe(0)
      expect(steps.some((s) => s.kind === 'kernel' && s.kernel.source.includes('finite flags'))).toBe(false)
    },
  )

  test.prop([fc.integer({ min: 2, max: 30 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0.05, 0.5)], { numRuns: 30 })(
    'a mask that is also an output stays stored and is read as a plain part',
    async (n, seed, rate) => {
      const p = traceOrThrow([f32([n, 7])], (x: Tensor) => {
        const m = x.abs().le(F32_MAX).cast('float32').reshape([-1])
        return [concat([m, x.builder.full([1], 0)], 0).argmin(0), m]
      }).program
      await sameBits(p, ins(p, seed, rate))
      const steps = planProgram(p, { wasm: true, threads: 1 }).steps
      expect(steps.some((s) => s.kind === 'kernel' && s.kernel.source.includes('finite flags'))).toBe(true)
    },
  )

  test.prop([fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 37 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0.05)], { numRuns: 40 })(
    'column sums over leading axes (1 and 2 of them; widths off the 8-column group) and concat of a leading axis',
    async (a, b, c, seed, rate) => {
      const p = traceOrThrow([f32([a, b, c]), f32([1, 2, c])], (x: Tensor, y: Tensor) => [x.sum(0), x.sum([0, 1]), concat([y, x.reshape([1, a * b, c])], 1)]).program
      expect(await sameBits(p, ins(p, seed, rate))).toBe(3)
    },
  )

  test.prop(
    // at least 4096 elements (below, the generated loop runs), odd widths for vector tails
    [fc.integer({ min: 60, max: 150 }), fc.integer({ min: 69, max: 131 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0, 0.001, 0.2)],
    { numRuns: 40 },
  )('the sum of every element of an elementwise expression (a loss: rows, scalars, constants; chunk and vector tails)', async (m, n, seed, rate) => {
    const p = traceOrThrow([f32([m, n]), f32([n]), f32([m, n]), f32([])], (y: Tensor, b: Tensor, x: Tensor, s: Tensor) => {
      const d = y.add(b).sub(x)
      return [d.square().sum(), d.abs().sqrt().div(s).neg().add(0.5).sum(), y.sum()]
    }).program
    expect(await sameBits(p, ins(p, seed, rate))).toBe(3)
  })

  test.prop([fc.integer({ min: 40, max: 90 }), fc.integer({ min: 100, max: 801 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.constantFrom(0, 0.05)], { numRuns: 10 })(
    'column sums of 4096 elements and more (bias gradients) run in WebAssembly',
    async (m, n, seed, rate) => {
      const p = traceOrThrow([f32([m, n])], (x: Tensor) => [x.sum(0)]).program
      expect(await sameBits(p, ins(p, seed, rate))).toBe(1)
    },
  )

  test('without WebAssembly the finite probe keeps its loops, the column sums and concat still run as scans', async () => {
    const p = traceOrThrow([f32([6, 5])], (x: Tensor) => [x.abs().le(F32_MAX).cast('float32').min(), x.sum(0), concat([x, x], 0)]).program
    const plan = planProgram(p, { wasm: false, threads: 1 })
    expect(plan.steps.filter((s) => s.kind === 'kernel' && s.kernel.source.startsWith('/*')).length).toBe(2)
  })
})
