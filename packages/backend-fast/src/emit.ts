import type { DType, Eqn, Shape, Var } from '@tessera/core'
import { stridesOf } from '@tessera/core'
import { expF32, fastTanh } from './fastmath.js'

/**
 * An index into a value: per-axis expressions, a flat row-major offset, or both. Movement ops
 * rewrite indices (they are never loops of their own); the flat form is kept when known so that
 * contiguous accesses stay `buf[o]` instead of a sum of products.
 */
export interface Index {
  readonly axes?: readonly string[]
  readonly flat?: string
}

/** What the emitter needs to know about the program. */
export interface EmitEnv {
  /** The equation that defines a variable, if any (inputs have none). */
  def(v: Var): Eqn | undefined
  /** Local name of the buffer holding a materialized variable, or undefined if it is inlined. */
  bufName(v: Var): string | undefined
}

const isIdent = (s: string) => /^[A-Za-z_$][\w$]*$/.test(s) || /^-?\d+$/.test(s)

/** A JS literal for a number that round-trips exactly (NaN, ±Infinity and -0 included). */
export function numLit(x: number): string {
  if (Number.isNaN(x)) return 'NaN'
  if (x === Infinity) return 'Infinity'
  if (x === -Infinity) return '-Infinity'
  if (Object.is(x, -0)) return '-0'
  return x < 0 ? `(${String(x)})` : String(x)
}

/**
 * Emits straight-line JS for the value of a fused expression at an index. Each (variable, index)
 * pair is computed once per loop body (memoized temps), so a value read twice by the same kernel
 * costs one evaluation. With `inline`, no temps are made (used to analyse which axes a
 * subexpression depends on).
 */
export class Emitter {
  readonly lines: string[] = []
  private readonly memo = new Map<string, string>()
  /**
   * Expressions (temp names, literals) known to hold an integer of magnitude at most the bound:
   * float32 add/sub/mul of such values below 2^24 are exact, so they need no fround (LFQ's
   * `bit * 2 - 1`, index arithmetic on comparisons).
   */
  private readonly intBound = new Map<string, number>()
  private n = 0

  constructor(
    private readonly env: EmitEnv,
    private readonly prefix = 't',
    private readonly inline = false,
  ) {}

  private bind(expr: string): string {
    if (this.inline || isIdent(expr)) return expr
    const name = `${this.prefix}${this.n++}`
    this.lines.push(`const ${name} = ${expr};`)
    return name
  }

  flatOf(ix: Index, shape: Shape): string {
    if (ix.flat !== undefined) return ix.flat
    const st = stridesOf(shape)
    const terms: string[] = []
    // literal indices (unrolled loops) fold into one constant term
    let lit = 0
    ix.axes!.forEach((a, k) => {
      if (shape[k] === 1 || a === '0') return
      if (/^\d+$/.test(a)) lit += Number(a) * st[k]!
      else terms.push(st[k] === 1 ? a : `${a} * ${st[k]}`)
    })
    if (lit !== 0) terms.push(String(lit))
    return terms.length === 0 ? '0' : this.bind(terms.join(' + '))
  }

  axesOf(ix: Index, shape: Shape): readonly string[] {
    if (ix.axes !== undefined) return ix.axes
    const f = this.bind(ix.flat!)
    if (shape.length === 1) return [f]
    const st = stridesOf(shape)
    return shape.map((d, k) => {
      if (d === 1) return '0'
      const q = st[k] === 1 ? f : `((${f} / ${st[k]}) | 0)`
      return k === 0 ? this.bind(q) : this.bind(`${q} % ${d}`)
    })
  }

  /** JS expression for `v` at `ix`; `self` holds the variables the current kernel defines (never read from their buffers). */
  value(v: Var, ix: Index, self?: Var | ReadonlySet<number>): string {
    const key = `${v.id}@${ix.flat ?? ''}|${ix.axes?.join(',') ?? ''}`
    const hit = this.memo.get(key)
    if (hit !== undefined) return hit
    const out = this.compute(v, ix, self)
    const named = this.bind(out)
    const b = this.boundOf(out)
    if (b !== undefined) this.intBound.set(named, b)
    this.memo.set(key, named)
    return named
  }

  /** Integer bound of an emitted expression, if known (see intBound). */
  private boundOf(expr: string): number | undefined {
    const known = this.intBound.get(expr)
    if (known !== undefined) return known
    const lit = /^\(?(-?\d+)\)?$/.exec(expr)
    if (lit) {
      const x = Math.abs(Number(lit[1]))
      return x <= EXACT ? x : undefined
    }
    return undefined
  }

  /** Records `b` as the bound of the expression `expr` (returned), when b is within the exact range. */
  private bounded(expr: string, b: number | undefined): string {
    if (b !== undefined && b <= EXACT) this.intBound.set(expr, b)
    return expr
  }

  private compute(v: Var, ix: Index, self?: Var | ReadonlySet<number>): string {
    const isSelf = self instanceof Set ? self.has(v.id) : v === self
    const buf = isSelf ? undefined : this.env.bufName(v)
    if (buf !== undefined) {
      const flat = this.flatOf(ix, v.aval.shape)
      const c = this.env.def(v)
      // a constant at a literal index (an unrolled loop over a small axis) is a literal
      if (c?.prim === 'constant' && /^\d+$/.test(flat)) return numLit(storeValue(v.aval.dtype, Number(c.params.data[Number(flat)])))
      return this.bounded(`${buf}[${flat}]`, storedBound(v, c))
    }
    const e = this.env.def(v)
    if (!e) throw new Error(`fast backend: variable ${v.id} has no buffer and no definition`)
    const shape = v.aval.shape
    const inDt = e.inputs[0]?.aval.dtype
    const arg = (k: number, i: Index = ix) => this.value(e.inputs[k]!, i, self instanceof Set ? self : undefined)
    switch (e.prim) {
      case 'full':
        return numLit(storeValue(e.params.dtype, e.params.value))
      case 'iota': {
        const ax = this.axesOf(ix, shape)
        return this.bounded(ax[e.params.axis]!, shape[e.params.axis]! - 1)
      }
      case 'reshape':
        return this.value(e.inputs[0]!, { flat: this.flatOf(ix, shape) })
      case 'broadcast': {
        const inShape = e.inputs[0]!.aval.shape
        const ax = this.axesOf(ix, shape)
        const off = shape.length - inShape.length
        return this.value(e.inputs[0]!, { axes: inShape.map((d, k) => (d === 1 ? '0' : ax[k + off]!)) })
      }
      case 'transpose': {
        const ax = this.axesOf(ix, shape)
        const inAx = new Array<string>(ax.length)
        e.params.perm.forEach((p, k) => (inAx[p] = ax[k]!))
        return this.value(e.inputs[0]!, { axes: inAx })
      }
      case 'slice': {
        const ax = this.axesOf(ix, shape)
        const { start, step } = e.params
        return this.value(e.inputs[0]!, {
          axes: ax.map((a, k) => {
            const s = start[k]!, st = step[k]!
            const scaled = st === 1 ? a : `${a} * ${st}`
            return s === 0 ? scaled : `(${scaled} + ${s})`
          }),
        })
      }
      case 'where': {
        const [c, a, b] = [arg(0), arg(1), arg(2)]
        const ba = this.boundOf(a), bb = this.boundOf(b)
        return this.bounded(`(${c} ? ${a} : ${b})`, ba !== undefined && bb !== undefined ? Math.max(ba, bb) : undefined)
      }
      case 'cast': {
        const a = arg(0)
        const to = e.params.dtype
        const b = this.boundOf(a)
        if (to === inDt) return a
        if (to === 'bool') return this.bounded(`+(${a} !== 0)`, 1)
        // an integer below 2^24 is its own float32 and int32 conversion (`| 0` turns a float -0 into 0)
        if (b !== undefined) return this.bounded(to === 'int32' && inDt === 'float32' ? `(${a} | 0)` : a, b)
        if (to === 'int32') return inDt === 'float32' ? `CI(${a})` : a
        return inDt === 'int32' ? `F(${a})` : a
      }
      case 'stop_gradient':
        return arg(0)
      default: {
        const a = e.inputs.length === 1 ? [arg(0)] : [arg(0), arg(1)]
        const b = resultBound(e.prim, a.map((x) => this.boundOf(x)))
        if (b !== undefined && b <= EXACT && inDt === 'float32') {
          const exact = exactElementwise(e.prim, a)
          if (exact !== undefined) return this.bounded(exact, b)
        }
        return this.bounded(elementwise(e.prim, inDt!, a), b)
      }
    }
  }
}

/** Integers up to this magnitude are exact in float32 (and int32). */
const EXACT = 2 ** 24

/** Bound of a stored value read from its buffer: bools, and constants whose data are all small integers. */
function storedBound(v: Var, e: Eqn | undefined): number | undefined {
  if (v.aval.dtype === 'bool') return 1
  if (e?.prim !== 'constant') return undefined
  let m = 0
  const data = e.params.data as ArrayLike<number>
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!
    if (!Number.isInteger(x) || Math.abs(x) > EXACT) return undefined
    m = Math.max(m, Math.abs(x))
  }
  return m
}

/** Integer bound of an elementwise result from its operands' bounds (undefined: not known to be an integer). */
function resultBound(prim: Eqn['prim'], b: readonly (number | undefined)[]): number | undefined {
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

/** A float32 op on integer operands whose exact result is an integer below 2^24: no rounding needed. */
function exactElementwise(prim: Eqn['prim'], a: readonly string[]): string | undefined {
  const [x, y] = a as [string, string]
  switch (prim) {
    case 'neg': return `(-${x})`
    case 'abs': return `Math.abs(${x})`
    case 'floor': case 'round': return x
    case 'add': return `(${x} + ${y})`
    case 'sub': return `(${x} - ${y})`
    case 'mul': return `(${x} * ${y})`
    default: return undefined
  }
}

/** What storing `x` into an array of `dtype` leaves there. */
export function storeValue(dtype: DType, x: number): number {
  if (dtype === 'float32') return Math.fround(x)
  if (dtype === 'bool') return x !== 0 ? 1 : 0
  return x | 0
}

/**
 * One elementwise primitive as a JS expression whose value equals what the reference stores:
 * float results pass through F (Math.fround), int32 results through `| 0` (the Int32Array store),
 * comparisons give 0/1 (as `+(a < b)`: branch-free, which matters on unpredictable data).
 */
function elementwise(prim: Eqn['prim'], dt: DType, a: readonly string[]): string {
  const [x, y] = a as [string, string]
  const f = dt === 'float32'
  switch (prim) {
    case 'neg': return f ? `(-${x})` : `((-${x}) | 0)`
    case 'abs': return f ? `Math.abs(${x})` : `(Math.abs(${x}) | 0)`
    case 'sign': return `(${x} > 0 ? 1 : ${x} < 0 ? -1 : ${x})`
    case 'exp': return `F(EXP(${x}))`
    case 'log': return `F(LOG(${x}))`
    case 'sqrt': return `F(Math.sqrt(${x}))`
    case 'tanh': return `F(TANH(${x}))`
    case 'atanh': return `F(Math.atanh(${x}))`
    case 'floor': return `Math.floor(${x})`
    case 'round': return `RNE(${x})`
    case 'recip': return `F(1 / ${x})`
    case 'add': return f ? `F(${x} + ${y})` : `((${x} + ${y}) | 0)`
    case 'sub': return f ? `F(${x} - ${y})` : `((${x} - ${y}) | 0)`
    case 'mul': return f ? `F(${x} * ${y})` : `Math.imul(${x}, ${y})`
    case 'div': return `F(${x} / ${y})`
    case 'idiv': return `(${y} === 0 ? 0 : Math.floor(${x} / ${y}) | 0)`
    case 'mod': return `(${y} === 0 ? 0 : (${x} - ${y} * Math.floor(${x} / ${y})) | 0)`
    case 'pow': return `F(Math.pow(${x}, ${y}))`
    case 'max': return `MAX(${x}, ${y})`
    case 'min': return `MIN(${x}, ${y})`
    case 'lt': return `+(${x} < ${y})`
    case 'le': return `+(${x} <= ${y})`
    case 'eq': return `+(${x} === ${y})`
    default:
      throw new Error(`fast backend: ${prim} is not elementwise`)
  }
}

/** Helpers every generated kernel closes over; their semantics are the reference's. */
export const kernelHelpers = {
  F: Math.fround,
  TANH: fastTanh,
  EXP: expF32,
  // each kernel gets its own (the function owns a scratch buffer): see kernels.ts
  LOG: Math.log as (x: number) => number,
  // (x + 1.5 * 2^52) - 1.5 * 2^52 rounds x to an integer half to even (the float64 addition
  // rounds so) for |x| < 2^51; larger magnitudes, infinities and NaN take the Math.round path. A
  // zero result takes x's sign (Math.round(-0.3) is -0). V8 compiles Math.round to an
  // out-of-line call (~8 ns); this is ~3x cheaper.
  RNE: (x: number) => {
    if (!(Math.abs(x) < 2251799813685248)) {
      const r = Math.round(x)
      return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r
    }
    const r = (x + 6755399441055744) - 6755399441055744
    return r === 0 ? 0 * x : r
  },
  MAX: (x: number, y: number) => (x !== x || y !== y ? NaN : x > y ? x : y),
  MIN: (x: number, y: number) => (x !== x || y !== y ? NaN : x < y ? x : y),
  CI: (x: number) => {
    if (x !== x) return 0
    const t = Math.trunc(x)
    // `| 0`: a -0 would otherwise leak into a later int32 -> float32 cast (the Int32Array store gives 0)
    return t > 2147483647 ? 2147483647 : t < -2147483648 ? -2147483648 : t | 0
  },
}
export const helperNames = Object.keys(kernelHelpers)
