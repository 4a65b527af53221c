import { describe, expect, it } from 'vitest'
import type { Aval, Program, Tensor } from '../src/index.js'
import { allPrims, concat, grad, interpretProgram, tensorOf, traceOrThrow, vjpRules, where } from '../src/index.js'
import type { F64 } from './autodiff-f64.js'
import { numericGrad } from './autodiff-f64.js'

/**
 * Each VJP rule on its own: the float32 gradient program, run by the reference interpreter,
 * against central differences of the same program evaluated in float64.
 *
 * Tolerance: the finite differences are exact to ~1e-9 here (h = 1e-6 in float64 on smooth
 * functions of O(1) values), so the error is the float32 gradient's own: a handful of rounded
 * ops on O(1)-O(10) values, each off by at most 2^-24 relative, so 1e-4 + 1e-4 |g| is a bound
 * with room, while any wrong rule is off by O(1).
 */
function checkGradient(
  specs: readonly Aval[],
  fn: (...xs: Tensor[]) => Tensor,
  values: readonly (readonly number[])[],
  wrt?: readonly number[],
): { got: Float32Array[]; want: Float64Array[]; program: Program } {
  const traced = traceOrThrow(specs, (...xs: Tensor[]) => fn(...xs))
  const program = traced.program
  const w = wrt ?? specs.flatMap((s, i) => (s.dtype === 'float32' ? [i] : []))
  const gp = grad(program, w)
  const inputs = values.map((v, i) => tensorOf(v, specs[i]!.shape, specs[i]!.dtype))
  const outs = interpretProgram(gp, inputs)
  const got = outs.slice(program.outputs.length).map((t) => t.data as Float32Array)
  const f64: F64[] = inputs.map((t) => ({ shape: t.shape, data: Float64Array.from(t.data) }))
  const want = numericGrad(program, f64, w, 1e-6)
  got.forEach((g, k) => {
    const n = want[k]!
    expect(g.length).toBe(n.length)
    for (let i = 0; i < g.length; i++) {
      if (Math.abs(g[i]! - n[i]!) > 1e-4 + 1e-4 * Math.abs(n[i]!))
        throw new Error(`gradient of input ${w[k]} element ${i}: got ${g[i]}, finite differences ${n[i]}\n`)
    }
  })
  return { got, want, program: gp }
}

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })
const i32 = (...shape: number[]): Aval => ({ shape, dtype: 'int32' })
/** A fixed weighting so that every output element gets a distinct cotangent. */
const weigh = (t: Tensor) => {
  const w = Array.from({ length: t.size }, (_, i) => 0.3 + 0.17 * ((i * 7) % 11) - 0.8)
  return t.mul(t.builder.constant(w, t.shape)).sum()
}
const xs6 = [0.3, -0.7, 1.2, 0.55, -1.4, 0.9]
const pos6 = [0.6, 1.7, 2.3, 0.9, 1.1, 2.8]

describe('each VJP rule against float64 central differences', () => {
  const unary: [string, (x: Tensor) => Tensor, number[]][] = [
    ['neg', (x) => x.neg(), xs6],
    ['exp', (x) => x.exp(), xs6],
    ['log', (x) => x.log(), pos6],
    ['sqrt', (x) => x.sqrt(), pos6],
    ['tanh', (x) => x.tanh(), xs6],
    ['atanh', (x) => x.mul(0.5).atanh(), xs6],
    ['abs', (x) => x.abs(), xs6],
    ['recip', (x) => x.recip(), pos6.map((v, i) => (i % 2 ? -v : v))],
    ['square (mul of one operand by itself)', (x) => x.square(), xs6],
    ['sigmoid', (x) => x.sigmoid(), xs6],
  ]
  for (const [name, f, vals] of unary)
    it(name, () => {
      checkGradient([f32(2, 3)], (x) => weigh(f(x)), [vals])
    })

  const binary: [string, (a: Tensor, b: Tensor) => Tensor][] = [
    ['add', (a, b) => a.add(b)],
    ['sub', (a, b) => a.sub(b)],
    ['mul', (a, b) => a.mul(b)],
    ['div', (a, b) => a.div(b)],
    ['pow', (a, b) => a.pow(b)],
    ['max', (a, b) => a.maximum(b)],
    ['min', (a, b) => a.minimum(b)],
  ]
  for (const [name, f] of binary) {
    it(name, () => {
      checkGradient([f32(2, 3), f32(2, 3)], (a, b) => weigh(f(a, b)), [pos6, [1.1, 0.4, 2.0, 1.5, 0.7, 2.2]])
    })
    it(`${name} with broadcasting (broadcast's rule sums over the broadcast axes)`, () => {
      checkGradient([f32(2, 3), f32(3)], (a, b) => weigh(f(a, b)), [pos6, [1.3, 0.5, 2.1]])
    })
  }

  it('pow with a negative base and a constant integer exponent', () => {
    checkGradient([f32(2, 3)], (x) => weigh(x.pow(x.builder.full([2, 3], 3))), [xs6])
  })

  it('where', () => {
    checkGradient([f32(2, 3), f32(2, 3)], (a, b) => weigh(where(a.lt(b), a.mul(2), b.exp())), [xs6, [0.1, 0.2, -0.3, 1.0, -2.0, 0.5]])
  })

  it('reshape, transpose, and broadcast of a size-1 axis', () => {
    checkGradient([f32(2, 3), f32(2, 1)], (a, b) => weigh(a.reshape([3, 2]).transpose().mul(b.broadcastTo([2, 3]).transpose([1, 0]).mT)), [xs6, [0.5, -2]])
  })

  it('slice with start, end and step on two axes', () => {
    const vals = Array.from({ length: 35 }, (_, i) => Math.sin(i))
    checkGradient([f32(5, 7)], (x) => weigh(x.slice([1, 0], [5, 6], [2, 3]).exp()), [vals])
    checkGradient([f32(5, 7)], (x) => weigh(x.slice([0, 2], [4, 7], [3, 2]).exp()), [vals])
  })

  it('pad', () => {
    checkGradient([f32(2, 3)], (x) => weigh(x.pad([1, 0], [2, 2], 0.5).exp()), [xs6])
  })

  it('concat', () => {
    checkGradient([f32(2, 3), f32(2, 1)], (a, b) => weigh(concat([a, b.exp(), a.tanh()], 1)), [xs6, [0.4, -0.2]])
  })

  it('reduce_sum over several axes', () => {
    const vals = Array.from({ length: 24 }, (_, i) => Math.cos(i))
    checkGradient([f32(2, 3, 4)], (x) => weigh(x.sum([0, 2]).exp()), [vals])
  })

  it('reduce_max and reduce_min (distinct values)', () => {
    const vals = Array.from({ length: 24 }, (_, i) => Math.cos(i * 1.3))
    checkGradient([f32(2, 3, 4)], (x) => weigh(x.max([1, 2])), [vals])
    checkGradient([f32(2, 3, 4)], (x) => weigh(x.min(0)), [vals])
  })

  it('matmul (batched)', () => {
    const a = Array.from({ length: 12 }, (_, i) => Math.sin(i + 1))
    const b = Array.from({ length: 24 }, (_, i) => Math.cos(i + 2))
    checkGradient([f32(2, 2, 3), f32(2, 3, 4)], (x, y) => weigh(x.matmul(y)), [a, b])
  })

  it('gather: a scatter-add that sums repeated indices, on an inner axis', () => {
    const vals = Array.from({ length: 24 }, (_, i) => Math.sin(i))
    const { got } = checkGradient(
      [f32(2, 4, 3), i32(5)],
      (x, idx) => weigh(x.gather(idx, 1).exp()),
      [vals, [3, 0, 3, 3, 1]],
      [0],
    )
    // row 2 is never gathered: its gradient is exactly zero
    for (let b = 0; b < 2; b++) for (let k = 0; k < 3; k++) expect(got[0]![b * 12 + 2 * 3 + k]).toBe(0)
  })

  it('cast float32 -> int32 -> float32 and the integer path carry no gradient', () => {
    const { got } = checkGradient([f32(2, 3)], (x) => weigh(x.cast('int32').cast('float32').add(x.mul(2))), [xs6])
    expect(Array.from(got[0]!).every((g, i) => Math.abs(g - 2 * (0.3 + 0.17 * ((i * 7) % 11) - 0.8)) < 1e-6)).toBe(true)
  })
})

describe('non-differentiable primitives and stop_gradient', () => {
  const run = (fn: (x: Tensor) => Tensor, vals: number[]) => {
    const p = traceOrThrow([f32(2, 3)], fn).program
    return interpretProgram(grad(p), [tensorOf(vals, [2, 3])])[1]!.data
  }
  it.each([
    ['round', (x: Tensor) => x.round()],
    ['floor', (x: Tensor) => x.floor()],
    ['sign', (x: Tensor) => x.sign()],
    ['stopGradient', (x: Tensor) => x.stopGradient()],
    ['lt -> cast', (x: Tensor) => x.lt(0.5).cast('float32')],
    ['argmax -> cast', (x: Tensor) => x.argmax(1).cast('float32')],
  ])('%s gives a zero gradient', (_n, f) => {
    expect(Array.from(run((x) => f(x).mul(3).sum(), xs6))).toEqual([0, 0, 0, 0, 0, 0])
  })

  it('the straight-through estimator x + stopGradient(round(x) - x) passes the gradient unchanged', () => {
    expect(Array.from(run((x) => weigh(x.add(x.round().sub(x).stopGradient())), xs6))).toEqual(
      Array.from({ length: 6 }, (_, i) => Math.fround(0.3 + 0.17 * ((i * 7) % 11) - 0.8)),
    )
  })

  it('stop_gradient blocks one path and leaves the other', () => {
    // d/dx [x * stopGradient(x)] = stopGradient(x) = x
    expect(Array.from(run((x) => x.mul(x.stopGradient()).sum(), xs6))).toEqual(xs6.map(Math.fround))
  })

  it('an argmin-selected value gets the gradient through gather only', () => {
    const p = traceOrThrow([f32(2, 3)], (x) => x.gather(x.argmin(1).reshape([2, 1]), 1).sum()).program
    const g = interpretProgram(grad(p), [tensorOf(xs6, [2, 3])])[1]!.data
    // both rows have their minimum in column 1, and every row gathers the columns [argmin(row 0), argmin(row 1)]
    expect(Array.from(g)).toEqual([0, 2, 0, 0, 2, 0])
  })
})

describe('ties', () => {
  const gradOf = (fn: (x: Tensor) => Tensor, vals: number[], shape: number[]) => {
    const p = traceOrThrow([f32(...shape)], fn).program
    return Array.from(interpretProgram(grad(p), [tensorOf(vals, shape)])[1]!.data)
  }
  it('reduce_max spreads the cotangent evenly among tied maxima (as torch.amax)', () => {
    expect(gradOf((x) => x.max(1).sum(), [1, 3, 3, 2, 5, 5, 5, 0], [2, 4])).toEqual([0, 0.5, 0.5, 0, 1 / 3, 1 / 3, 1 / 3, 0].map(Math.fround))
  })
  it('reduce_min likewise', () => {
    expect(gradOf((x) => x.min(0).sum(), [1, 2, 1, 2], [2, 2])).toEqual([0.5, 0.5, 0.5, 0.5])
  })
  it('binary max splits a tie in half (torch.maximum), which central differences also give', () => {
    expect(gradOf((x) => x.maximum(1).sum(), [1, 2, 0, 1], [4])).toEqual([0.5, 1, 0, 0.5])
  })
})

it('every primitive has a rule (the table is total)', () => {
  expect(allPrims.filter((p) => typeof vjpRules[p] !== 'function')).toEqual([])
})
