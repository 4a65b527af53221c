import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect, test, vi } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import type { ElemExpr, ElemGroup } from '../src/wasm/elementwise.js'
import { elementwiseSet } from '../src/wasm/elementwise.js'
import { threadedElementwise } from '../src/wasm/elem-threads.js'

/**
 * The WebAssembly elementwise passes' max and min (the reference's NaN and signed-zero rules) and
 * per-row values broadcast along trailing axes (a row's norm read by each of its elements, as in
 * VectorQuantize's rotation trick): bit for bit the reference's, on one thread and on several.
 */

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
/** Each value's bits, every NaN as one (a NaN's sign and payload are not part of the contract). */
const bits = (t: HostTensor | Float32Array) => {
  const a = Float32Array.from(t instanceof Float32Array ? t : (t.data as ArrayLike<number>), (v) => (Number.isNaN(v) ? NaN : v))
  return Array.from(new Int32Array(a.buffer))
}
type Program = ReturnType<typeof traceOrThrow>['program']
const elemOuts = (p: Program) => planProgram(p, { wasm: true, threads: 1 }).steps.flatMap((s) => (s.kind === 'elem' ? s.outs : []))
/** The prims of the generated JS loops (kernel steps) whose output has `n` elements, and how many pass outputs have that many. */
const loopsOver = (p: Program, n: number) => {
  const plan = planProgram(p, { wasm: true, threads: 1 })
  const size = (slot: number) => plan.slotVars[slot]!.aval.shape.reduce((a, b) => a * b, 1)
  return {
    js: plan.steps.flatMap((s) => (s.kind === 'kernel' && size(s.out) === n ? [s.prim] : [])),
    passes: plan.steps.flatMap((s) => (s.kind === 'elem' ? s.outs.filter((o) => size(o) === n) : [])).length,
  }
}
const special = [0, -0, NaN, Infinity, -Infinity, 1e-40, -1e-45, 3.4e38]
/** Values with every special one, each of them also met by every other one, and plain ones. */
const values = (n: number, seed: number) =>
  Array.from({ length: n }, (_, i) => (i % 7 === 3 ? special[(i * seed) % special.length]! : i % 11 === 5 ? special[(i >> 3) % special.length]! : Math.sin(i * 0.37 + seed) * 3))

describe('WebAssembly elementwise max and min', () => {
  test('NaN when either is NaN, else the first where strictly greater (less), else the second: max(+0, -0) is -0, as the reference', async () => {
    const n = 4096 + 3
    const p = traceOrThrow([f32([n]), f32([n])], (x: Tensor, y: Tensor) => [x.maximum(y), x.minimum(y), y.maximum(x).add(x.minimum(0)), x.maximum(-0).mul(y)]).program
    expect(elemOuts(p).length).toBe(4)
    // every pair of special values, both ways round, then the rest
    const pairs = special.flatMap((a) => special.map((b) => [a, b] as const))
    const xs = values(n, 1), ys = values(n, 2)
    pairs.forEach(([a, b], i) => ((xs[i] = a), (ys[i] = b)))
    const ins = [tensorOf(xs, [n]), tensorOf(ys, [n])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((g, i) => expect(bits(g), `output ${i}`).toEqual(bits(want[i]!)))
    // the signed zeros are what the check is about
    expect(Object.is(got[0]!.data[pairs.findIndex(([a, b]) => Object.is(a, 0) && Object.is(b, -0))], -0)).toBe(true)
  })
})

describe('WebAssembly elementwise per-row values', () => {
  /** x / max(|x|, eps) and a rotation-like use of two rows' norms, with the squared norm a row sum. */
  const program = (rows: number, inner: number) =>
    traceOrThrow([f32([1, rows, inner]), f32([1, rows, inner])], (x: Tensor, q: Tensor) => {
      const nx = x.square().sum(-1, true).sqrt().maximum(1e-6)
      const nq = q.square().sum(-1, true).sqrt().maximum(1e-6)
      const u = x.div(nx).add(q.div(nq))
      const w = u.div(u.square().sum(-1, true).sqrt().maximum(1e-6))
      return [w.mul(nq.div(nx)), w.mul(x).sum(-1)]
    }).program

  test.each([[2048, 4], [300, 64], [33, 256], [1000, 8]])('%i rows of %i: norms read per row in the passes, the reference bits', async (rows, inner) => {
    const p = program(rows, inner)
    // every step over the rows' elements is a pass (the norms themselves, one value a row, are JS loops)
    expect(loopsOver(p, rows * inner)).toEqual({ js: [], passes: 1 })
    const ins = [tensorOf(values(rows * inner, 3), [1, rows, inner]), tensorOf(values(rows * inner, 5).map((v, i) => (i % inner === 0 ? 0 : v)), [1, rows, inner])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((g, i) => expect(bits(g), `output ${i}`).toEqual(bits(want[i]!)))
  })

  test('a broadcast along trailing axes of 12 elements (not a power of two) stays a JS loop, with the same values', async () => {
    const p = program(400, 12)
    expect(loopsOver(p, 4800).passes).toBe(0)
    const ins = [tensorOf(values(4800, 3), [1, 400, 12]), tensorOf(values(4800, 5), [1, 400, 12])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((g, i) => expect(bits(g), `output ${i}`).toEqual(bits(want[i]!)))
  })

  test('on threads: chunks claimed by every thread read their rows\' values, the one-thread bits', async () => {
    // tanh(x) / max(r, eps) over 2^18 + 4 * 13 elements in rows of 4 (a heavy group runs threaded), r a stored per-row value
    const inner = 4, rows = 2 ** 16 + 13, n = rows * inner
    const x = Float32Array.from(values(n, 7)), r = Float32Array.from(values(rows, 9).map(Math.abs))
    const th: ElemExpr = { kind: 'op', prim: 'tanh', args: [{ kind: 'read', slot: 0, type: 'f32' }], id: 10, type: 'f32' }
    const den: ElemExpr = { kind: 'op', prim: 'max', args: [{ kind: 'perRow', slot: 1, inner, type: 'f32' }, { kind: 'const', value: Math.fround(1e-6), type: 'f32' }], id: 11, type: 'f32' }
    const g: ElemGroup = { outs: [2], exprs: [{ kind: 'op', prim: 'div', args: [th, den], id: 12, type: 'f32' }], n, rowSum: { out: 3, term: th, width: inner } }
    const one = elementwiseSet().add(g)
    const want = [new Float32Array(n), new Float32Array(rows)]
    one([x, r], want)
    // the per-row value is read at element / inner (not element % rows, nor the row sum's order)
    for (const i of [0, 5, n - 1]) expect(Object.is(want[0]![i], Math.fround(Math.tanh(x[i]!)) / Math.max(r[Math.floor(i / inner)]!, Math.fround(1e-6))) || Math.abs(want[0]![i]! - Math.tanh(x[i]!) / Math.max(r[Math.floor(i / inner)]!, 1e-6)) < 1e-5 * Math.abs(want[0]![i]!)).toBe(true)
    const first = vi.fn(one)
    const t = threadedElementwise(g, 2, first)
    for (const wait of [0, 0, 20, 20]) {
      const got = [new Float32Array(n).fill(7), new Float32Array(rows).fill(7)]
      t.run([x, r], got)
      got.forEach((o, i) => {
        const w = bits(want[i]!)
        expect(bits(o).findIndex((v, j) => v !== w[j]), `output ${i}`).toBe(-1)
      })
      if (wait) await new Promise((res) => setTimeout(res, wait))
    }
    expect(first).toHaveBeenCalledTimes(1)
    await t.dispose()
  })
})
