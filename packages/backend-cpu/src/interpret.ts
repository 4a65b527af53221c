import type { AnyTypedArray, Aval, HostTensor, Prim, PrimParams, Program, Shape } from '@tessera/core'
import { TesseraError, allocate, random, sizeOf, stridesOf } from '@tessera/core'
import { broadcastStrides, transposeStrides, viewCopy } from './view.js'

/**
 * The CPU reference: the definition of what every primitive computes.
 *
 * Numerics (the spec every other backend is measured against):
 * - float32 values; each elementwise op is computed in double and rounded once to float32
 *   (stores into Float32Array round), which is what a correctly rounded float32 op gives.
 * - sums and matmul accumulate in float64 and round once at the end.
 * - round is half-to-even (torch.round); argmin/argmax return the first index among ties, and a
 *   NaN wins (torch propagates NaN); max/min/sum propagate NaN.
 * - int32 add/sub/mul wrap around; idiv/mod are floor division/modulo (Python's // and %) and
 *   give 0 for a zero divisor; cast float->int32 truncates toward zero, saturates, and maps NaN to 0;
 *   cast to bool is `x != 0` (NaN -> true).
 * - gather with an index outside the axis throws, naming the index and the axis.
 */
export type Impl<P extends Prim> = (ins: readonly HostTensor[], params: PrimParams[P], out: Aval) => AnyTypedArray

const unaryF =
  (f: (x: number) => number): Impl<Prim> =>
  (ins, _p, out) => {
    const a = ins[0]!.data
    const r = allocate(out.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!)
    return r
  }

const binaryF =
  (fFloat: (x: number, y: number) => number, fInt: (x: number, y: number) => number = fFloat): Impl<Prim> =>
  (ins, _p, out) => {
    const a = ins[0]!.data, b = ins[1]!.data
    const f = ins[0]!.dtype === 'float32' ? fFloat : fInt
    const r = allocate(out.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!, b[i]!)
    return r
  }

/** torch.round: half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x)
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r
}

const nanMax = (x: number, y: number) => (x !== x || y !== y ? NaN : x > y ? x : y)
const nanMin = (x: number, y: number) => (x !== x || y !== y ? NaN : x < y ? x : y)
const floorDiv = (x: number, y: number) => (y === 0 ? 0 : Math.floor(x / y))
const floorMod = (x: number, y: number) => (y === 0 ? 0 : x - y * Math.floor(x / y))

function castTo(dtype: Aval['dtype'], x: number): number {
  if (dtype === 'bool') return x !== 0 ? 1 : 0
  if (dtype === 'int32') {
    if (x !== x) return 0
    const t = Math.trunc(x)
    return t > 2147483647 ? 2147483647 : t < -2147483648 ? -2147483648 : t
  }
  return x
}

/** Move `axes` to the end (keeping order) and return the contiguous data plus outer/inner sizes. */
function axesLast(t: HostTensor, axes: readonly number[]): { data: AnyTypedArray; outer: number; inner: number } {
  const r = t.shape.length
  const keep = [...Array(r).keys()].filter((i) => !axes.includes(i))
  const perm = [...keep, ...axes]
  const inner = axes.reduce((a, i) => a * t.shape[i]!, 1)
  const outer = keep.reduce((a, i) => a * t.shape[i]!, 1)
  const moved = perm.every((p, i) => p === i)
    ? t.data
    : viewCopy(t.data, t.dtype, perm.map((p) => t.shape[p]!), transposeStrides(t.shape, perm), 0)
  return { data: moved, outer, inner }
}

function reduceImpl<P extends 'reduce_sum' | 'reduce_max' | 'reduce_min'>(kind: 'sum' | 'max' | 'min'): Impl<P> {
  return (ins, p, out) => {
    const t = ins[0]!
    const { data, outer, inner } = axesLast(t, p.axes)
    const r = allocate(out.dtype, outer)
    const isInt = t.dtype === 'int32'
    for (let o = 0; o < outer; o++) {
      const base = o * inner
      if (kind === 'sum') {
        let s = 0
        if (isInt) for (let j = 0; j < inner; j++) s = (s + data[base + j]!) | 0
        else for (let j = 0; j < inner; j++) s += data[base + j]!
        r[o] = s
      } else {
        let m = data[base]!
        const f = kind === 'max' ? nanMax : nanMin
        for (let j = 1; j < inner; j++) m = f(m, data[base + j]!)
        r[o] = m
      }
    }
    return r
  }
}

function argImpl<P extends 'argmin' | 'argmax'>(kind: 'min' | 'max'): Impl<P> {
  return (ins, p, out) => {
    const t = ins[0]!
    const { data, outer, inner } = axesLast(t, [p.axis])
    const r = allocate(out.dtype, outer)
    for (let o = 0; o < outer; o++) {
      const base = o * inner
      let best = data[base]!
      let bi = 0
      if (best === best) {
        for (let j = 1; j < inner; j++) {
          const v = data[base + j]!
          if (v !== v) {
            bi = j
            break
          }
          if (kind === 'min' ? v < best : v > best) {
            best = v
            bi = j
          }
        }
      }
      r[o] = bi
    }
    return r
  }
}

export const cpuImpls: { readonly [P in Prim]: Impl<P> } = {
  neg: unaryF((x) => -x),
  exp: unaryF(Math.exp),
  log: unaryF(Math.log),
  sqrt: unaryF(Math.sqrt),
  tanh: unaryF(Math.tanh),
  atanh: unaryF(Math.atanh),
  abs: unaryF(Math.abs),
  sign: unaryF((x) => (x > 0 ? 1 : x < 0 ? -1 : x)),
  floor: unaryF(Math.floor),
  round: unaryF(roundHalfEven),
  recip: unaryF((x) => 1 / x),
  stop_gradient: (ins) => ins[0]!.data.slice(),
  cast: (ins, p) => {
    const a = ins[0]!.data
    const r = allocate(p.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = castTo(p.dtype, a[i]!)
    return r
  },
  add: binaryF((x, y) => x + y, (x, y) => (x + y) | 0),
  sub: binaryF((x, y) => x - y, (x, y) => (x - y) | 0),
  mul: binaryF((x, y) => x * y, Math.imul),
  div: binaryF((x, y) => x / y),
  idiv: binaryF(floorDiv),
  mod: binaryF(floorMod),
  pow: binaryF(Math.pow),
  max: binaryF(nanMax),
  min: binaryF(nanMin),
  lt: binaryF((x, y) => (x < y ? 1 : 0)),
  le: binaryF((x, y) => (x <= y ? 1 : 0)),
  eq: binaryF((x, y) => (x === y ? 1 : 0)),
  where: (ins, _p, out) => {
    const c = ins[0]!.data, a = ins[1]!.data, b = ins[2]!.data
    const r = allocate(out.dtype, c.length)
    for (let i = 0; i < c.length; i++) r[i] = c[i] ? a[i]! : b[i]!
    return r
  },
  reshape: (ins) => ins[0]!.data.slice(),
  broadcast: (ins, p) => viewCopy(ins[0]!.data, ins[0]!.dtype, p.shape, broadcastStrides(ins[0]!.shape, p.shape), 0),
  transpose: (ins, p, out) => viewCopy(ins[0]!.data, ins[0]!.dtype, out.shape, transposeStrides(ins[0]!.shape, p.perm), 0),
  slice: (ins, p, out) => {
    const st = stridesOf(ins[0]!.shape)
    const offset = p.start.reduce((a, s, i) => a + s * st[i]!, 0)
    return viewCopy(ins[0]!.data, ins[0]!.dtype, out.shape, st.map((s, i) => s * p.step[i]!), offset)
  },
  pad: (ins, p, out) => {
    const t = ins[0]!
    const r = allocate(out.dtype, sizeOf(out.shape))
    r.fill(castTo(out.dtype, p.value))
    if (sizeOf(t.shape) === 0) return r
    // write the input block into the output through a strided view of the output
    const ost = stridesOf(out.shape)
    const offset = p.lo.reduce((a, l, i) => a + l * ost[i]!, 0)
    const ist = stridesOf(t.shape)
    for (let k = 0; k < t.data.length; k++) {
      let rem = k, o = offset
      for (let ax = 0; ax < t.shape.length; ax++) {
        const q = Math.floor(rem / ist[ax]!)
        rem -= q * ist[ax]!
        o += q * ost[ax]!
      }
      r[o] = t.data[k]!
    }
    return r
  },
  concat: (ins, p, out) => {
    const r = allocate(out.dtype, sizeOf(out.shape))
    const outer = out.shape.slice(0, p.axis).reduce((a, b) => a * b, 1)
    const rowOut = sizeOf(out.shape.slice(p.axis))
    let col = 0
    for (const t of ins) {
      const rowIn = sizeOf(t.shape.slice(p.axis))
      for (let o = 0; o < outer; o++) r.set(t.data.subarray(o * rowIn, (o + 1) * rowIn), o * rowOut + col)
      col += rowIn
    }
    return r
  },
  reduce_sum: reduceImpl('sum'),
  reduce_max: reduceImpl('max'),
  reduce_min: reduceImpl('min'),
  argmin: argImpl('min'),
  argmax: argImpl('max'),
  matmul: (ins, _p, out) => {
    const a = ins[0]!, b = ins[1]!
    const r = a.shape.length
    const m = a.shape[r - 2]!, k = a.shape[r - 1]!, n = b.shape[r - 1]!
    const batch = sizeOf(a.shape.slice(0, -2))
    const res = new Float32Array(sizeOf(out.shape))
    const acc = new Float64Array(n)
    const ad = a.data, bd = b.data
    for (let bt = 0; bt < batch; bt++) {
      const aOff = bt * m * k, bOff = bt * k * n, oOff = bt * m * n
      for (let i = 0; i < m; i++) {
        acc.fill(0)
        for (let kk = 0; kk < k; kk++) {
          const av = ad[aOff + i * k + kk]!
          const bRow = bOff + kk * n
          for (let j = 0; j < n; j++) acc[j] += av * bd[bRow + j]!
        }
        for (let j = 0; j < n; j++) res[oOff + i * n + j] = acc[j]!
      }
    }
    return res
  },
  gather: (ins, p, out) => {
    const x = ins[0]!, idx = ins[1]!
    const d = x.shape[p.axis]!
    const outer = sizeOf(x.shape.slice(0, p.axis))
    const inner = sizeOf(x.shape.slice(p.axis + 1))
    const ni = idx.data.length
    const r = allocate(out.dtype, sizeOf(out.shape))
    for (let j = 0; j < ni; j++) {
      const v = idx.data[j]!
      if (v < 0 || v >= d)
        throw new TesseraError('runtime', 'gather', `index ${v} (at flat position ${j}) is out of range [0, ${d}) on axis ${p.axis}`)
    }
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < ni; j++) {
        const src = (o * d + idx.data[j]!) * inner
        r.set(x.data.subarray(src, src + inner), (o * ni + j) * inner)
      }
    return r
  },
  iota: (_ins, p, out) => {
    const r = allocate(out.dtype, sizeOf(p.shape))
    const st = stridesOf(p.shape)
    const s = st[p.axis]!, d = p.shape[p.axis]!
    for (let i = 0; i < r.length; i++) r[i] = Math.floor(i / s) % d
    return r
  },
  full: (_ins, p, out) => allocate(out.dtype, sizeOf(p.shape)).fill(castTo(out.dtype, p.value)),
  constant: (_ins, p, out) => {
    const r = allocate(out.dtype, p.data.length)
    r.set(p.data)
    return r
  },
  random_uniform: (ins, p) => {
    const k = ins[0]!.data
    return random.fillUniform(k[0]!, k[1]!, new Float32Array(sizeOf(p.shape)))
  },
}

export function applyPrim<P extends Prim>(prim: P, ins: readonly HostTensor[], params: PrimParams[P], out: Aval): HostTensor {
  const impl = cpuImpls[prim] as Impl<P>
  return { shape: out.shape as Shape, dtype: out.dtype, data: impl(ins, params, out) } as HostTensor
}

/**
 * Evaluate a program one primitive at a time. Values are dropped after their last use, so
 * memory follows the program's live set.
 */
export function interpretProgram(program: Program, inputs: readonly HostTensor[]): HostTensor[] {
  const env = new Map<number, HostTensor>()
  program.inputs.forEach((v, i) => env.set(v.id, inputs[i]!))
  const lastUse = new Map<number, number>()
  program.eqns.forEach((e, k) => e.inputs.forEach((v) => lastUse.set(v.id, k)))
  const keep = new Set(program.outputs.map((v) => v.id))
  program.eqns.forEach((e, k) => {
    const ins = e.inputs.map((v) => {
      const t = env.get(v.id)
      if (!t) throw new TesseraError('runtime', 'interpretProgram', `variable ${v.id} has no value (equation ${k}, ${e.prim})`)
      return t
    })
    env.set(e.out.id, applyPrim(e.prim, ins, e.params as never, e.out.aval))
    for (const v of e.inputs) if (lastUse.get(v.id) === k && !keep.has(v.id)) env.delete(v.id)
  })
  return program.outputs.map((v) => env.get(v.id)!)
}
