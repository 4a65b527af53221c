import type { DType } from '../dtype.js'
import type { Prim } from '../prim.js'
import type { Eqn, Var } from '../program.js'

/**
 * Fixed-point facts about float values, used by code generators to drop roundings that cannot
 * change a value: an op on operands whose exact result is provably a float32 needs no
 * `Math.fround` (LFQ's `bit * 2 - 1`, FSQ's codes times their scales, index arithmetic on
 * comparisons). Every rule here is sound for the reference's values; a generator that knows
 * nothing simply rounds.
 */

/** Integers up to this magnitude are exact in float32 (and int32). */
export const EXACT = 2 ** 24

/**
 * What is known about a float value: it is NaN, or finite of magnitude at most `m`; with `q`, it
 * is also an integer multiple of 2^-q (q may be negative: a multiple of 2^-q > 1). Such a value
 * is a float32 exactly when its multiples of 2^-q number at most 2^24 (m 2^q <= 2^24) and 2^-q
 * is no finer than float32's subnormal step (q <= 149).
 */
export interface NumInfo {
  readonly m: number
  readonly q?: number
}

export function isExactF32(i: NumInfo): boolean {
  return i.q !== undefined && i.q <= 149 && i.m * 2 ** i.q <= EXACT && i.m < 2 ** 127
}

/** Smallest q with x 2^q an integer (finite x; zero is a multiple of everything). */
export function dyadicExponent(x: number): number {
  if (x === 0) return -1074
  let y = Math.abs(x), q = 0
  while (!Number.isInteger(y)) {
    y *= 2
    q++
  }
  while (y % 2 === 0) {
    y /= 2
    q--
  }
  return q
}

export function isPowerOfTwo(c: number): boolean {
  if (!Number.isFinite(c) || c === 0) return false
  const a = Math.abs(c)
  return 2 ** Math.round(Math.log2(a)) === a
}

/** What a literal tells: its magnitude and its power-of-two quantum (nothing for NaN and infinities). */
export const literalInfo = (x: number): NumInfo | undefined =>
  Number.isFinite(x) ? { m: Math.abs(x), q: dyadicExponent(x) } : undefined

/** An integer below 2^24 in magnitude, if the info says so. */
export const integerInfo = (i: NumInfo | undefined): NumInfo | undefined =>
  i !== undefined && i.q !== undefined && i.q <= 0 && i.m <= EXACT ? i : undefined

export const joinInfo = (a: NumInfo | undefined, b: NumInfo | undefined): NumInfo | undefined =>
  a === undefined || b === undefined
    ? undefined
    : { m: Math.max(a.m, b.m), ...(a.q !== undefined && b.q !== undefined ? { q: Math.max(a.q, b.q) } : {}) }

/**
 * What is known about the exact (unrounded) result of a float32 op from its operands' infos
 * (undefined: nothing). tanh is bounded whatever its argument (NaN stays NaN).
 */
export function resultInfo(prim: Prim, a: readonly (NumInfo | undefined)[]): NumInfo | undefined {
  const [x, y] = a
  switch (prim) {
    case 'lt': case 'le': case 'eq': return { m: 1, q: 0 }
    case 'sign': return { m: 1, q: 0 }
    case 'tanh': return { m: 1 }
    case 'neg': case 'abs': return x
    case 'floor': case 'round': return x === undefined ? undefined : { m: Math.ceil(x.m), q: 0 }
    case 'max': case 'min': return joinInfo(x, y)
    case 'add': case 'sub':
      if (x === undefined || y === undefined) return undefined
      return { m: x.m + y.m, ...(x.q !== undefined && y.q !== undefined ? { q: Math.max(x.q, y.q) } : {}) }
    case 'mul':
      if (x === undefined || y === undefined) return undefined
      return { m: x.m * y.m, ...(x.q !== undefined && y.q !== undefined ? { q: x.q + y.q } : {}) }
    default: return undefined
  }
}

/**
 * What is known after rounding to float32 a result that may not be exact: a magnitude bound
 * (float32 rounding grows it by 2^-24 relative at most; 2^-20 also covers the float64 error of
 * computing the bound), none where the result may overflow to an infinity.
 */
export function roundedInfo(prim: Prim, i: NumInfo | undefined): NumInfo | undefined {
  if (i === undefined) return undefined
  if (isExactF32(i) || prim === 'lt' || prim === 'le' || prim === 'eq' || prim === 'sign') return i
  const m = i.m * (1 + 2 ** -20)
  return m < 2 ** 127 ? { m } : undefined
}

/** Integer bound of an elementwise result from its operands' bounds (undefined: not known to be an integer). */
export function resultBound(prim: Prim, b: readonly (number | undefined)[]): number | undefined {
  switch (prim) {
    case 'lt': case 'le': case 'eq': return 1
    case 'sign': return b[0] === undefined ? undefined : 1
    case 'neg': case 'abs': case 'floor': case 'round': return b[0]
    case 'add': case 'sub': return b[0] !== undefined && b[1] !== undefined ? b[0] + b[1] : undefined
    case 'mul': return b[0] !== undefined && b[1] !== undefined ? b[0] * b[1] : undefined
    case 'max': case 'min': return b[0] !== undefined && b[1] !== undefined ? Math.max(b[0], b[1]) : undefined
    default: return undefined
  }
}

/** What storing `x` into an array of `dtype` leaves there. */
export function storeValue(dtype: DType, x: number): number {
  if (dtype === 'float32') return Math.fround(x)
  if (dtype === 'bool') return x !== 0 ? 1 : 0
  return x | 0
}

/** Constants with more elements than this are not searched for their fixed-point form (only for integers). */
const DYADIC_SCAN_MAX = 4096

const through = (p: Prim) => p === 'broadcast' || p === 'reshape' || p === 'transpose' || p === 'slice' || p === 'stop_gradient'

/** What is known about 1/c for a divisor `c` made of constant powers of two (else undefined). */
export function reciprocalInfo(c: Var, def: (v: Var) => Eqn | undefined): NumInfo | undefined {
  let e = def(c)
  while (e && through(e.prim)) e = def(e.inputs[0]!)
  const values = e?.prim === 'full' ? [e.params.value] : e?.prim === 'constant' && e.params.data.length <= DYADIC_SCAN_MAX ? Array.from(e.params.data as ArrayLike<number>) : undefined
  if (values === undefined || values.length === 0) return undefined
  let m = 0, q = -1074
  for (const x of values) {
    const c32 = Math.fround(x)
    if (!isPowerOfTwo(c32)) return undefined
    m = Math.max(m, Math.abs(1 / c32))
    q = Math.max(q, dyadicExponent(1 / c32))
  }
  return { m, q }
}

/**
 * What is known about a stored value read from its buffer: bools are 0/1; a constant's values
 * are bounded by its largest magnitude, and (small constants, or all-integer ones) are multiples
 * of the coarsest power of two that divides them all.
 */
export function storedInfo(v: Var, e: Eqn | undefined): NumInfo | undefined {
  if (v.aval.dtype === 'bool') return { m: 1, q: 0 }
  if (e?.prim !== 'constant') return undefined
  const data = e.params.data as ArrayLike<number>
  const scan = data.length <= DYADIC_SCAN_MAX
  let m = 0, q = -1074
  for (let i = 0; i < data.length; i++) {
    const x = storeValue(v.aval.dtype, data[i]!)
    if (!Number.isFinite(x)) return undefined
    if (!scan && (!Number.isInteger(x) || Math.abs(x) > EXACT)) return undefined
    m = Math.max(m, Math.abs(x))
    q = Math.max(q, scan ? dyadicExponent(x) : 0)
  }
  return { m, q }
}

/**
 * What is known about each variable's values from its definition, whatever loop computes it
 * (stored values are the reference's: a sum of FSQ's integer-valued terms is an integer, so the
 * loop that rounds and casts it reads it as one). Transcendental results carry only what holds
 * for the reference's and a backend's approximations alike (tanh: magnitude 1). Memoized: one
 * instance serves every loop of a program, each value's facts computed once from its operands'.
 */
export class ValueFacts {
  private readonly memo = new Map<number, NumInfo | null>()

  constructor(private readonly def: (v: Var) => Eqn | undefined) {}

  of(v: Var): NumInfo | undefined {
    const hit = this.memo.get(v.id)
    if (hit !== undefined) return hit ?? undefined
    // operands first, without recursion (programs can be thousands of equations deep)
    const stack: Var[] = [v]
    while (stack.length > 0) {
      const u = stack[stack.length - 1]!
      if (this.memo.has(u.id)) {
        stack.pop()
        continue
      }
      const missing = u.aval.dtype === 'bool' ? [] : (this.def(u)?.inputs.filter((w) => !this.memo.has(w.id)) ?? [])
      if (missing.length > 0) {
        stack.push(...missing)
        continue
      }
      this.memo.set(u.id, this.fromDef(u) ?? null)
      stack.pop()
    }
    return this.memo.get(v.id) ?? undefined
  }

  /** Facts of `v` from its operands' (already known). */
  private fromDef(v: Var): NumInfo | undefined {
    if (v.aval.dtype === 'bool') return { m: 1, q: 0 }
    const e = this.def(v)
    if (!e) return undefined
    const at = (k: number) => this.of(e.inputs[k]!)
    const inDt = e.inputs[0]?.aval.dtype
    switch (e.prim) {
      case 'constant': return storedInfo(v, e)
      case 'full': return literalInfo(storeValue(e.params.dtype, e.params.value))
      case 'iota': return { m: Math.max(0, v.aval.shape[e.params.axis]! - 1), q: 0 }
      case 'broadcast': case 'reshape': case 'transpose': case 'slice': case 'stop_gradient': return at(0)
      case 'where': return joinInfo(at(1), at(2))
      case 'cast':
        if (e.params.dtype === inDt) return at(0)
        // integers below 2^24 convert exactly between float32 and int32 (a NaN becomes int 0)
        return integerInfo(at(0))
      case 'argmin': case 'argmax': return { m: Math.max(0, e.inputs[0]!.aval.shape[e.params.axis]! - 1), q: 0 }
      case 'reduce_sum': case 'reduce_max': case 'reduce_min': {
        const x = at(0)
        const count = e.params.axes.reduce((p, k) => p * e.inputs[0]!.aval.shape[k]!, 1)
        if (x === undefined || count === 0) return undefined
        if (e.prim !== 'reduce_sum') return x
        // float64 (or int32) sums of multiples of 2^-q: exact while below 2^24 of them, then rounded once
        const sum = { m: x.m * count, ...(x.q !== undefined ? { q: x.q } : {}) }
        if (v.aval.dtype === 'int32') return integerInfo(sum)
        return roundedInfo('reduce_sum', sum)
      }
      default: {
        if (inDt === 'int32') {
          const b = resultBound(e.prim, e.inputs.map((u) => integerInfo(this.of(u))?.m))
          return b !== undefined && b <= EXACT ? { m: b, q: 0 } : undefined
        }
        if (inDt !== 'float32') return undefined
        const ai = e.inputs.map((u) => this.of(u))
        let prim: Prim = e.prim
        // division by constant powers of two: a multiply by their reciprocals (bit for bit)
        if (prim === 'div') {
          const r = reciprocalInfo(e.inputs[1]!, this.def)
          if (r === undefined) return undefined
          prim = 'mul'
          ai[1] = r
        }
        return roundedInfo(prim, resultInfo(prim, ai))
      }
    }
  }
}
