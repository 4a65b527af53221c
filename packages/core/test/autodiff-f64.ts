/**
 * A float64 evaluator for the primitives the gradient tests use: finite differences of a
 * float32 program lose most of their digits to rounding, so the tests difference this instead.
 * Integer and bool values are carried as doubles too.
 */
import type { Program, Shape } from '../src/index.js'
import { sizeOf, stridesOf } from '../src/index.js'

export interface F64 {
  readonly shape: Shape
  readonly data: Float64Array
}

const mk = (shape: Shape, f: (i: number) => number): F64 => {
  const data = new Float64Array(sizeOf(shape))
  for (let i = 0; i < data.length; i++) data[i] = f(i)
  return { shape, data }
}

/** Multi-index of flat position i in `shape`. */
function unravel(i: number, shape: Shape): number[] {
  const st = stridesOf(shape)
  return st.map((s, ax) => Math.floor(i / s) % shape[ax]!)
}
const ravel = (idx: readonly number[], shape: Shape) => {
  const st = stridesOf(shape)
  return idx.reduce((a, v, ax) => a + v * st[ax]!, 0)
}

function reduce(x: F64, axes: readonly number[], init: number, f: (a: number, b: number) => number): F64 {
  const outShape = x.shape.filter((_, i) => !axes.includes(i))
  const out = mk(outShape, () => init)
  for (let i = 0; i < x.data.length; i++) {
    const idx = unravel(i, x.shape).filter((_, ax) => !axes.includes(ax))
    const o = ravel(idx, outShape)
    out.data[o] = f(out.data[o]!, x.data[i]!)
  }
  return out
}

export type EqnHook = (e: Program['eqns'][number], ins: readonly F64[], out: F64) => void

export function evalF64(program: Program, inputs: readonly F64[], hook?: EqnHook): F64[] {
  const env = new Map<number, F64>()
  program.inputs.forEach((v, i) => env.set(v.id, inputs[i]!))
  for (const e of program.eqns) {
    const ins = e.inputs.map((v) => env.get(v.id)!)
    const shape = e.out.aval.shape
    const [a, b, c] = ins
    const un = (f: (x: number) => number) => mk(shape, (i) => f(a!.data[i]!))
    const bin = (f: (x: number, y: number) => number) => mk(shape, (i) => f(a!.data[i]!, b!.data[i]!))
    let r: F64
    switch (e.prim) {
      case 'neg': r = un((x) => -x); break
      case 'exp': r = un(Math.exp); break
      case 'log': r = un(Math.log); break
      case 'sqrt': r = un(Math.sqrt); break
      case 'tanh': r = un(Math.tanh); break
      case 'atanh': r = un(Math.atanh); break
      case 'abs': r = un(Math.abs); break
      case 'sign': r = un(Math.sign); break
      case 'floor': r = un(Math.floor); break
      case 'round': r = un((x) => (Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : Math.round(x))); break
      case 'recip': r = un((x) => 1 / x); break
      case 'stop_gradient': r = un((x) => x); break
      case 'cast': r = un((x) => (e.params.dtype === 'bool' ? (x !== 0 ? 1 : 0) : e.params.dtype === 'int32' ? Math.trunc(x) : x)); break
      case 'add': r = bin((x, y) => x + y); break
      case 'sub': r = bin((x, y) => x - y); break
      case 'mul': r = bin((x, y) => x * y); break
      case 'div': r = bin((x, y) => x / y); break
      case 'pow': r = bin(Math.pow); break
      case 'max': r = bin(Math.max); break
      case 'min': r = bin(Math.min); break
      case 'lt': r = bin((x, y) => (x < y ? 1 : 0)); break
      case 'le': r = bin((x, y) => (x <= y ? 1 : 0)); break
      case 'eq': r = bin((x, y) => (x === y ? 1 : 0)); break
      case 'where': r = mk(shape, (i) => (a!.data[i] ? b!.data[i]! : c!.data[i]!)); break
      case 'reshape': r = { shape, data: a!.data }; break
      case 'broadcast': {
        const off = shape.length - a!.shape.length
        r = mk(shape, (i) => {
          const idx = unravel(i, shape).slice(off).map((v, ax) => (a!.shape[ax] === 1 ? 0 : v))
          return a!.data[ravel(idx, a!.shape)]!
        })
        break
      }
      case 'transpose': {
        const perm = e.params.perm
        r = mk(shape, (i) => {
          const idx = unravel(i, shape)
          const src = new Array<number>(perm.length)
          perm.forEach((p, k) => (src[p] = idx[k]!))
          return a!.data[ravel(src, a!.shape)]!
        })
        break
      }
      case 'slice': {
        const p = e.params
        r = mk(shape, (i) => a!.data[ravel(unravel(i, shape).map((v, ax) => p.start[ax]! + v * p.step[ax]!), a!.shape)]!)
        break
      }
      case 'pad': {
        const p = e.params
        r = mk(shape, (i) => {
          const idx = unravel(i, shape).map((v, ax) => v - p.lo[ax]!)
          return idx.some((v, ax) => v < 0 || v >= a!.shape[ax]!) ? p.value : a!.data[ravel(idx, a!.shape)]!
        })
        break
      }
      case 'concat': {
        const ax = e.params.axis
        r = mk(shape, (i) => {
          const idx = unravel(i, shape)
          let k = 0
          while (idx[ax]! >= ins[k]!.shape[ax]!) idx[ax]! -= ins[k++]!.shape[ax]!
          return ins[k]!.data[ravel(idx, ins[k]!.shape)]!
        })
        break
      }
      case 'reduce_sum': r = reduce(a!, e.params.axes, 0, (x, y) => x + y); break
      case 'reduce_max': r = reduce(a!, e.params.axes, -Infinity, Math.max); break
      case 'reduce_min': r = reduce(a!, e.params.axes, Infinity, Math.min); break
      case 'matmul': {
        const rk = shape.length
        const m = a!.shape[rk - 2]!, k = a!.shape[rk - 1]!, n = b!.shape[rk - 1]!
        r = mk(shape, (i) => {
          const bt = Math.floor(i / (m * n)), ii = Math.floor(i / n) % m, j = i % n
          let s = 0
          for (let q = 0; q < k; q++) s += a!.data[bt * m * k + ii * k + q]! * b!.data[bt * k * n + q * n + j]!
          return s
        })
        break
      }
      case 'gather': {
        const ax = e.params.axis
        const ir = b!.shape.length
        r = mk(shape, (i) => {
          const idx = unravel(i, shape)
          const pos = b!.data[ravel(idx.slice(ax, ax + ir), b!.shape)]!
          return a!.data[ravel([...idx.slice(0, ax), pos, ...idx.slice(ax + ir)], a!.shape)]!
        })
        break
      }
      case 'iota': r = mk(shape, (i) => unravel(i, shape)[e.params.axis]!); break
      case 'full': r = mk(shape, () => e.params.value); break
      case 'constant': r = mk(shape, (i) => e.params.data[i]!); break
      default:
        throw new Error(`evalF64: ${e.prim} is not supported`)
    }
    hook?.(e, ins, r)
    env.set(e.out.id, r)
  }
  return program.outputs.map((v) => env.get(v.id)!)
}

/** Central differences of output `out` (a scalar) with respect to every element of the float inputs in `wrt`. */
export function numericGrad(program: Program, inputs: readonly F64[], wrt: readonly number[], h = 1e-5, out = 0): Float64Array[] {
  return wrt.map((w) => {
    const x = inputs[w]!
    const g = new Float64Array(x.data.length)
    for (let i = 0; i < x.data.length; i++) {
      const at = (d: number) => {
        const data = Float64Array.from(x.data)
        data[i] = data[i]! + d
        const ins = inputs.map((t, k) => (k === w ? { shape: x.shape, data } : t))
        return evalF64(program, ins)[out]!.data[0]!
      }
      g[i] = (at(h) - at(-h)) / (2 * h)
    }
    return g
  })
}

/** Per group of a reduction over `axes`: the gap between the extremum and the runner-up. */
function groupGaps(x: F64, axes: readonly number[], out: F64): number {
  const outShape = out.shape
  let gap = Infinity
  const firstHit = new Uint8Array(out.data.length)
  for (let i = 0; i < x.data.length; i++) {
    const o = ravel(unravel(i, x.shape).filter((_, ax) => !axes.includes(ax)), outShape)
    const d = Math.abs(x.data[i]! - out.data[o]!)
    if (d === 0 && !firstHit[o]) firstHit[o] = 1
    else gap = Math.min(gap, d)
  }
  return gap
}

/**
 * How far (in float64) the evaluation of `program` at `inputs` stays from every kink of a
 * piecewise primitive: ties of max/min/comparisons/reductions, integers for floor, halves for
 * round, zero for sign/abs. Autodiff and finite differences agree only away from kinks.
 */
export function kinkMargin(program: Program, inputs: readonly F64[]): number {
  let m = Infinity
  const all = (t: F64, f: (v: number) => number) => t.data.forEach((v) => (m = Math.min(m, f(v))))
  evalF64(program, inputs, (e, ins, out) => {
    const [a, b] = ins
    switch (e.prim) {
      case 'max': case 'min': case 'lt': case 'le': case 'eq':
        a!.data.forEach((v, i) => (m = Math.min(m, Math.abs(v - b!.data[i]!))))
        break
      case 'reduce_max': case 'reduce_min':
        m = Math.min(m, groupGaps(a!, e.params.axes, out))
        break
      case 'floor': all(a!, (v) => Math.abs(v - Math.round(v))); break
      case 'round': all(a!, (v) => Math.abs(Math.abs(v - Math.floor(v)) - 0.5)); break
      case 'sign': case 'abs': all(a!, Math.abs); break
      default:
    }
  })
  return m
}
