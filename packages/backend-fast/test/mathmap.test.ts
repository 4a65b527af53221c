import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import { planProgram } from '../src/plan.js'
import type { MapSpec, ProOp } from '../src/wasm/mathmap.js'
import { mathMapFactory, mathMapModule } from '../src/wasm/mathmap.js'
import { entropyProgram, expectSameBits, f32, rowChainOf, runUntilShared, values } from './loop-helpers.js'

const F = Math.fround
/** Distance in float32 ulps (both finite, same sign). */
const ulps = (a: number, b: number) => {
  const i = new Int32Array(new Float32Array([a, b]).buffer)
  return Math.abs(i[0]! - i[1]!)
}

const plainExp: MapSpec = { ops: [], rowArrays: 0 }
/** A map with no prologue, as the function `(src, dst, len)` of the tests below. */
const makePlain = (size: number) => {
  const m = mathMapFactory()(mathMapModule(plainExp, size))
  return (src: Float32Array, dst: Float32Array, len: number) => m(src, [], dst, len, len)
}

describe('WebAssembly exp map (float64 lanes, rounded once to float32)', () => {
  const map = makePlain(1000)

  test('special values and the float32 overflow / underflow edges are the reference values', () => {
    const xs = [0, -0, NaN, Infinity, -Infinity, 1, -1, 88.72, 88.7228, 88.73, 88.8, 89, 1e3, -87.3, -103.2, -103.97, -103.98, -104, -110, -1e30, 1e-30, -1e-30, 3.4e38, -3.4e38]
    const src = new Float32Array(xs)
    const out = new Float32Array(xs.length)
    map(src, out, xs.length)
    src.forEach((x, i) => {
      if (!Object.is(out[i], F(Math.exp(x)))) expect.fail(`exp(${x}): ${out[i]} vs ${F(Math.exp(x))}`)
    })
  })

  test.prop([fc.array(fc.float({ noNaN: false }), { minLength: 1, maxLength: 3000 })], { numRuns: 60 })(
    'any float32 inputs, any length (several chunks, odd tails): within one ulp of fround(Math.exp), equal almost always',
    (xs) => {
      const src = new Float32Array(xs)
      const out = new Float32Array(xs.length).fill(-7)
      map(src, out, xs.length)
      src.forEach((x, i) => {
        const want = F(Math.exp(x))
        if (Object.is(out[i], want)) return
        // a one-ulp difference only where exp(x) is within ~1e-15 of a float32 rounding midpoint
        if (!(Number.isFinite(want) && want > 0 && ulps(out[i]!, want) === 1)) expect.fail(`exp(${x}): ${out[i]} vs ${want}`)
        const mid = (out[i]! + want) / 2
        expect(Math.abs(Math.exp(x) - mid) / mid).toBeLessThan(1e-13)
      })
    },
  )

  test('a million values in the softmax range equal fround(Math.exp) bit for bit', () => {
    const n = 1 << 20
    const src = new Float32Array(n)
    for (let i = 0; i < n; i++) src[i] = F(-120 + (i * 137.5) / n + Math.sin(i) * 1e-3)
    const out = new Float32Array(n)
    makePlain(32768)(src, out, n)
    let bad = 0
    src.forEach((x, i) => void (Object.is(out[i], F(Math.exp(x))) || bad++))
    expect(bad).toBe(0)
  })
})

describe('the map prologue (float32 ops on literals and per-row values before the exp)', () => {
  test.prop(
    [
      fc.array(fc.record({ op: fc.constantFrom('add', 'sub', 'mul', 'div'), swapped: fc.boolean(), row: fc.option(fc.integer({ min: 0, max: 1 })), lit: fc.float({ min: -3, max: 3, noNaN: true }) }), { maxLength: 4 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 1, max: 40 }),
      fc.integer({ min: 0, max: 100 }),
    ],
    { numRuns: 60 },
  )('equals the same float32 ops and fround(Math.exp) bit for bit, for several rows and chunks', (raw, w8, rowsN, seed) => {
    const width = 8 * w8
    const ops: ProOp[] = raw.map((o) => (o.row !== null ? { op: o.op, swapped: o.swapped, row: o.row } : { op: o.op, swapped: o.swapped, lit: F(o.lit) }))
    const rowArrays = ops.some((o) => o.row === 1) ? 2 : ops.some((o) => o.row === 0) ? 1 : 0
    const fixed = ops.map((o) => (o.row !== undefined && o.row >= rowArrays ? { ...o, row: 0 } : o))
    // a small module (96 elements) so that rows span several calls
    const map = mathMapFactory()(mathMapModule({ ops: fixed, rowArrays }, 96))
    const len = width * rowsN
    const base = new Float32Array(values(len, seed).map((v) => v * 4))
    const rows = Array.from({ length: rowArrays }, (_, j) => new Float32Array(values(rowsN, seed + j + 1).map((v) => v * 2 + 0.5)))
    const out = new Float32Array(len)
    if (rowArrays > 0 && width > 96) return
    map(base, rows, out, len, width)
    const apply = (op: ProOp['op'], a: number, b: number) => F(op === 'add' ? a + b : op === 'sub' ? a - b : op === 'mul' ? a * b : a / b)
    base.forEach((x, i) => {
      let v = x
      for (const o of fixed) {
        const other = o.row !== undefined ? rows[o.row]![Math.floor(i / width)]! : o.lit!
        v = o.swapped ? apply(o.op, other, v) : apply(o.op, v, other)
      }
      const want = F(Math.exp(v))
      if (!Object.is(out[i], want)) expect.fail(`element ${i}: exp(${v}) ${out[i]} vs ${want}`)
    })
  })

  test('a row operand count other than the spec\'s, or rows wider than the module, are refused by name', () => {
    const map = mathMapFactory()(mathMapModule({ ops: [{ op: 'sub', swapped: false, row: 0 }], rowArrays: 1 }, 16))
    expect(() => map(new Float32Array(16), [], new Float32Array(16), 16, 8)).toThrow(/given 0 row operands, it reads 1/)
    expect(() => map(new Float32Array(32), [new Float32Array(1)], new Float32Array(32), 32, 32)).toThrow(/rows of 32 elements do not fit its 16/)
  })
})

describe('exp as a map step of the plan', () => {
  test('a large exp is a map step, small ones stay fused; without wasm never', () => {
    const big = traceOrThrow([f32([256, 256])], (x: Tensor) => [x.mul(3).exp().sum(-1)]).program
    const steps = planProgram(big, { wasm: true, threads: 1 }).steps
    expect(steps.filter((s) => s.kind === 'map')).toHaveLength(1)
    // x * 3 is read through the prologue: no loop stores it
    expect(steps.filter((s) => s.kind === 'kernel').map((s) => (s as { prim: string }).prim)).toEqual(['reduce_sum'])
    expect(planProgram(big, { wasm: false, threads: 1 }).steps.some((s) => s.kind === 'map')).toBe(false)
    const small = traceOrThrow([f32([64, 64])], (x: Tensor) => [x.mul(3).exp().sum(-1)]).program
    expect(planProgram(small, { wasm: true, threads: 1 }).steps.some((s) => s.kind === 'map')).toBe(false)
  })

  test('outside a chain: same bits as the reference (exp of a computed argument, read by two loops)', async () => {
    const p = traceOrThrow([f32([300, 300])], (x: Tensor) => {
      const e = x.mul(7).sub(2).exp()
      return [e.sum(-1), e.max(0), e]
    }).program
    const ins = [tensorOf(values(300 * 300, 5).map((v) => v * 20), [300, 300])]
    const ex = fastBackend({ wasm: true, threads: 1 }).compile(p)
    expectSameBits(await ex.run(ins), interpretProgram(p, ins), 'map outside a chain')
    ex.dispose()
  })

  test('softmax-shaped arguments use a per-row operand; other forms store the argument; all give the reference bits', async () => {
    const cases: [string, (x: Tensor) => Tensor, number][] = [
      ['x * 3 - rowmax', (x) => x.mul(3).sub(x.max(-1, true)), 1],
      ['2 / (rowsum - x)', (x) => x.sum(-1, true).sub(x).div(2).neg().add(0.5).mul(-1).div(x.abs().max(-1, true)), 2],
      ['x * x (no prologue form)', (x) => x.mul(x), 0],
    ]
    for (const [name, f, rowOps] of cases) {
      for (const shape of [[96, 8, 88], [300, 300]]) {
        const p = traceOrThrow([f32(shape)], (x: Tensor) => {
          const e = f(x).exp()
          return [e.sum(-1), e]
        }).program
        const maps = planProgram(p, { wasm: true, threads: 1 }).steps.filter((s) => s.kind === 'map') as unknown as { rows: number[] }[]
        expect(maps).toHaveLength(1)
        // rows of 300 are not whole map steps: the argument is stored instead
        expect(maps[0]!.rows).toHaveLength(shape[shape.length - 1]! % 8 === 0 ? rowOps : 0)
        const ins = [tensorOf(values(shape.reduce((a, b) => a * b, 1), 21).map((v) => v * 9), shape)]
        const ex = fastBackend({ wasm: true, threads: 1 }).compile(p)
        expectSameBits(await ex.run(ins), interpretProgram(p, ins), `${name} ${shape}`)
        ex.dispose()
      }
    }
  })

  test('inside a row chain (softmax entropy), on 1 and 2 threads: the reference bits, calls after calls', async () => {
    // 4096 x 128 logits: enough for the chain to take a worker thread (2^18 elements)
    const n = 4096, dim = 6, k = 128
    const p = entropyProgram(n, dim, k, true)
    const ins = [tensorOf(values(n * dim, 11), [n, dim]), tensorOf(values(k * dim, 12), [k, dim])]
    const want = interpretProgram(p, ins)
    for (const threads of [1, 2]) {
      // the chain's members as JS kernels and this map (wasmChains: true compiles the whole chain instead: chain-wasm.test.ts)
      const ex = fastBackend({ wasm: true, wasmChains: false, threads, blockRows: 9 }).compile(p)
      const chain = rowChainOf(ex) as unknown as { desc: { steps: { kind: string; rows?: number[] }[] } }
      // logits * -2 * -10 minus the row max, through the prologue
      expect(chain.desc.steps.filter((s) => s.kind === 'map').map((s) => s.rows!.length)).toEqual([1])
      for (let call = 0; call < 3; call++) expectSameBits(await ex.run(ins), want, `threads ${threads} call ${call}`)
      // the worker thread rebuilds the map and small-k runners from their sources: it must take blocks too
      if (threads === 2) expect(await runUntilShared(ex, ins, want)).toBe(true)
      ex.dispose()
    }
  })
})
