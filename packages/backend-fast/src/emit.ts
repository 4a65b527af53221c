import { TesseraError, collectiveError } from '@tessera/core'
import type { DType, ElemPrim, Eqn, NumInfo, Shape, Var } from '@tessera/core'
import { EXACT, ValueFacts, isExactF32, isPowerOfTwo, joinInfo, literalInfo, resultBound, resultInfo, roundedInfo, storeValue, stridesOf } from '@tessera/core'
import { expF32, fastTanh, signOf, TANH_TAB, tanhConsts } from './fastmath.js'

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
  /** Fixed-point facts about the program's values, shared by every loop of a plan (else one per emitter). */
  readonly facts?: ValueFacts
}

/** Names and literals, which need no temp of their own. */
const isIdent = (s: string) => /^[A-Za-z_$][\w$]*$/.test(s) || literalValue(s) !== undefined

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
  /** Whether the emitted lines call a helper function (EXP, LOG) that V8 may leave out of line. */
  callsHelper = false
  private readonly memo = new Map<string, string>()
  /**
   * What is known about the values of expressions (temp names; literals are read from their
   * text): a float32 add/sub/mul whose exact result is known to be a float32 needs no fround
   * (LFQ's `bit * 2 - 1`, index arithmetic on comparisons, FSQ's codes times their scales).
   */
  private readonly info = new Map<string, NumInfo>()
  /** What is known about variables' values from their definitions (core's fixed-point analysis). */
  private readonly facts: ValueFacts
  private n = 0

  constructor(
    private readonly env: EmitEnv,
    private readonly prefix = 't',
    private readonly inline = false,
  ) {
    this.facts = env.facts ?? new ValueFacts((v) => env.def(v))
  }

  private bind(expr: string): string {
    if (this.inline || isIdent(expr)) return expr
    const name = `${this.prefix}${this.n++}`
    this.lines.push(`const ${name} = ${expr};`)
    return name
  }

  /** A temp bound to `expr` even when it is an identifier (statements that need a fresh name). */
  private fresh(expr: string): string {
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
    const i = this.infoOf(out)
    if (i !== undefined) this.info.set(named, i)
    this.memo.set(key, named)
    return named
  }

  /** What is known about an emitted expression's value (see info), literals included. */
  private infoOf(expr: string): NumInfo | undefined {
    const known = this.info.get(expr)
    if (known !== undefined) return known
    const x = literalValue(expr)
    return x === undefined ? undefined : literalInfo(x)
  }

  /** Integer bound of an emitted expression: an integer of magnitude at most the bound (2^24 at most). */
  private boundOf(expr: string): number | undefined {
    const i = this.infoOf(expr)
    return i !== undefined && i.q !== undefined && i.q <= 0 && i.m <= EXACT ? i.m : undefined
  }

  /** Records `b` as the integer bound of the expression `expr` (returned), when b is within the exact range. */
  private bounded(expr: string, b: number | undefined): string {
    if (b !== undefined && b <= EXACT) this.info.set(expr, { m: b, q: 0 })
    return expr
  }

  /** Records what is known about `expr` (returned). */
  private known(expr: string, i: NumInfo | undefined): string {
    if (i !== undefined) this.info.set(expr, i)
    return expr
  }

  /**
   * tanh as straight-line code (fastTanh's operations; no call, so the inlining budget of a long
   * unrolled loop is not spent on it and the loop needs no helper call in it).
   */
  private tanh(x: string): string {
    const { TANH_MAX: M, TANH_K: K, SHIFTER: S, INV_N_LN2, N_LN2_HI, N_LN2_LO } = tanhConsts
    const y = this.fresh(`2 * (Math.abs(${x}) <= ${M} ? ${x} : ${x} > 0 ? ${M} : ${x} < 0 ? ${-M} : ${x})`)
    const kf = this.fresh(`(${y} * ${INV_N_LN2} + ${S}) - ${S}`)
    const r = this.fresh(`${y} - ${kf} * ${N_LN2_HI} - ${kf} * ${N_LN2_LO}`)
    const r2 = this.fresh(`${r} * ${r}`)
    const p = this.fresh(`${r} * ((1 + ${r} * 0.5) + ${r2} * ((${1 / 6} + ${r} * ${1 / 24}) + ${r2} * (${1 / 120} + ${r} * ${1 / 720})))`)
    const sc = this.fresh(`TANH_TAB[(${kf} | 0) + ${K}]`)
    const em1 = this.fresh(`${sc} * ${p} - (1 - ${sc})`)
    return `F(${em1} / (${em1} + 2))`
  }

  /**
   * Round half to even of a float32 known to be NaN or below 2^51 in magnitude, inline: the
   * 1.5 * 2^52 shifter rounds |x| so, and rounding is symmetric, so x's sign (SGN: ±1 from its
   * sign bit) restores the value and gives a zero result x's sign, as RNE does, with no branch.
   */
  private roundInline(x: string): string {
    return `((Math.abs(${x}) + 6755399441055744) - 6755399441055744) * SGN(${x})`
  }

  /**
   * Round half to even of any float32 inline: one from 2^23 on is an integer already (and an
   * infinity is its own rounding), so past 2^51 it is returned as is; NaN fails the test and is
   * returned too. The test is predictable where the values are mostly small.
   */
  private roundAnyF32(x: string): string {
    return `(Math.abs(${x}) < 2251799813685248 ? ${this.roundInline(x)} : ${x})`
  }

  private compute(v: Var, ix: Index, self?: Var | ReadonlySet<number>): string {
    const isSelf = self instanceof Set ? self.has(v.id) : v === self
    const buf = isSelf ? undefined : this.env.bufName(v)
    if (buf !== undefined) {
      const flat = this.flatOf(ix, v.aval.shape)
      const c = this.env.def(v)
      // a constant at a literal index (an unrolled loop over a small axis) is a literal
      if (c?.prim === 'constant' && /^\d+$/.test(flat)) return numLit(storeValue(v.aval.dtype, Number(c.params.data[Number(flat)])))
      return this.known(`${buf}[${flat}]`, this.facts.of(v))
    }
    const e = this.env.def(v)
    if (!e) throw new TesseraError('backend', 'fast.emit', `variable ${v.id} has no buffer and no definition`)
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
        return this.known(`(${c} ? ${a} : ${b})`, joinInfo(this.infoOf(a), this.infoOf(b)))
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
      // loops or host steps of their own (core's schedule stores them): read from buffers above
      case 'pad': case 'concat': case 'reduce_sum': case 'reduce_max': case 'reduce_min': case 'argmin': case 'argmax':
      case 'matmul': case 'gather': case 'constant': case 'random_uniform':
        throw new TesseraError('backend', 'fast.emit', `${e.prim} is stored by the schedule, never inlined`)
      // collectives never reach a backend: the schedule refuses them by name
      case 'all_reduce': case 'axis_index':
        throw collectiveError(e.prim, 'fast.emit')
      default: {
        // what is left is the expression table's: a new primitive fails tsc here until it is placed
        const prim = e.prim satisfies TablePrim
        const a = e.inputs.length === 1 ? [arg(0)] : [arg(0), arg(1)]
        if (inDt !== 'float32') return this.bounded(elementwise(prim, inDt!, a), resultBound(prim, a.map((x) => this.boundOf(x))))
        return this.floatOp(prim, a)
      }
    }
  }

  /** A float32 elementwise op: without fround when its exact result is known to be a float32. */
  private floatOp(prim: TablePrim, a0: readonly string[]): string {
    let prim1: TablePrim = prim
    let a = a0
    // x / 2^k is x * 2^-k bit for bit: for a float32 x both float64 operations are exact (no
    // overflow or underflow of float64 in reach), so both round the same real number to float32;
    // NaN, infinities and signed zeros come out alike too (1/c has c's sign)
    if (prim === 'div') {
      const c = literalValue(a[1]!)
      if (c !== undefined && isPowerOfTwo(c)) {
        prim1 = 'mul'
        a = [a[0]!, numLit(1 / c)]
      }
    }
    const [x, y] = a as [string, string]
    // x - (+0) and x + (-0) are x for every x (-0 included); x + (+0) is a float32 as x is
    if (prim1 === 'sub' && Object.is(literalValue(y), 0)) return this.known(x, this.infoOf(x))
    if (prim1 === 'add' && Object.is(literalValue(y), -0)) return this.known(x, this.infoOf(x))
    if (prim1 === 'add' && Object.is(literalValue(y), 0)) return this.known(`(${x} + 0)`, this.infoOf(x))
    // x * 1 is x for every x (NaN, infinities and -0 included)
    if (prim1 === 'mul' && literalValue(y) === 1) return this.known(x, this.infoOf(x))
    if (prim1 === 'mul' && literalValue(x) === 1) return this.known(y, this.infoOf(y))
    if (prim1 === 'tanh' && !this.inline) return this.known(this.tanh(x), { m: 1 })
    const ai = a.map((s) => this.infoOf(s))
    const exact = resultInfo(prim1, ai)
    if (prim1 === 'floor' || prim1 === 'round') {
      const i = ai[0]
      // an integer already (NaN included)
      if (i !== undefined && i.q !== undefined && i.q <= 0) return this.known(x, i)
      if (prim1 === 'round' && !this.inline && i !== undefined && i.m < 2 ** 51) return this.known(this.roundInline(x), exact)
      // operands of float32 ops are float32 values (loads, literals, rounded or exact results)
      if (prim1 === 'round' && !this.inline) return this.known(this.roundAnyF32(x), exact)
    }
    if (exact !== undefined && isExactF32(exact)) {
      const expr = exactElementwise(prim1, a)
      if (expr !== undefined) return this.known(expr, exact)
    }
    if (prim1 === 'exp' || prim1 === 'log') this.callsHelper = true
    return this.known(elementwise(prim1, 'float32', a), roundedInfo(prim1, exact))
  }
}

/** The number a literal expression (as numLit writes them) stands for. */
function literalValue(expr: string): number | undefined {
  const m = /^\(?(-?(?:\d+(?:\.\d+)?(?:e[+-]?\d+)?|Infinity|0)|NaN)\)?$/.exec(expr)
  return m ? Number(m[1]) : undefined
}

/** A float32 op on integer operands whose exact result is an integer below 2^24: no rounding needed. */
function exactElementwise(prim: Eqn['prim'], a: readonly string[]): string | undefined {
  const [x, y] = a as [string, string]
  switch (prim) {
    case 'neg': return `(-${x})`
    case 'abs': return `Math.abs(${x})`
    case 'add': return `(${x} + ${y})`
    case 'sub': return `(${x} - ${y})`
    case 'mul': return `(${x} * ${y})`
    default: return undefined
  }
}

/** Primitives the table below writes as expressions (cast, where and stop_gradient are handled by the Emitter). */
type TablePrim = Exclude<ElemPrim, 'cast' | 'where' | 'stop_gradient'>

/** JS source of one primitive from its operands' expressions, given whether it is a float op. */
type JsOp = (f: boolean, x: string, y: string) => string

/**
 * The fast backend's code for each elementwise primitive: a JS expression whose value equals
 * what the reference stores: float results pass through F (Math.fround), int32 results through
 * `| 0` (the Int32Array store), comparisons give 0/1 (as `+(a < b)`: branch-free, which matters
 * on unpredictable data). A mapped type over the primitives, so a new one fails tsc here.
 */
const jsOps: { readonly [P in TablePrim]: JsOp } = {
  neg: (f, x) => (f ? `(-${x})` : `((-${x}) | 0)`),
  abs: (f, x) => (f ? `Math.abs(${x})` : `(Math.abs(${x}) | 0)`),
  sign: (_f, x) => `(${x} > 0 ? 1 : ${x} < 0 ? -1 : ${x})`,
  exp: (_f, x) => `F(EXP(${x}))`,
  log: (_f, x) => `F(LOG(${x}))`,
  sqrt: (_f, x) => `F(Math.sqrt(${x}))`,
  tanh: (_f, x) => `F(TANH(${x}))`,
  atanh: (_f, x) => `F(Math.atanh(${x}))`,
  floor: (_f, x) => `Math.floor(${x})`,
  round: (_f, x) => `RNE(${x})`,
  recip: (_f, x) => `F(1 / ${x})`,
  add: (f, x, y) => (f ? `F(${x} + ${y})` : `((${x} + ${y}) | 0)`),
  sub: (f, x, y) => (f ? `F(${x} - ${y})` : `((${x} - ${y}) | 0)`),
  mul: (f, x, y) => (f ? `F(${x} * ${y})` : `Math.imul(${x}, ${y})`),
  div: (_f, x, y) => `F(${x} / ${y})`,
  idiv: (_f, x, y) => `(${y} === 0 ? 0 : Math.floor(${x} / ${y}) | 0)`,
  mod: (_f, x, y) => `(${y} === 0 ? 0 : (${x} - ${y} * Math.floor(${x} / ${y})) | 0)`,
  pow: (_f, x, y) => `F(Math.pow(${x}, ${y}))`,
  max: (_f, x, y) => pick(x, y, '>', 'MAX'),
  min: (_f, x, y) => pick(x, y, '<', 'MIN'),
  lt: (_f, x, y) => `+(${x} < ${y})`,
  le: (_f, x, y) => `+(${x} <= ${y})`,
  eq: (_f, x, y) => `+(${x} === ${y})`,
}

/** A local or a number literal: cheap to read twice, and without side effects. */
const simple = (s: string) => /^[A-Za-z_$][\w$]*$/.test(s) || /^\(?-?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?\)?$/i.test(s) || /^\(?-?(NaN|Infinity)\)?$/.test(s)

/**
 * max or min (`op` > or <) with the helper's semantics (NaN when either is NaN), written inline
 * where both operands are simple: a NaN result is then the NaN operand itself rather than a NaN
 * constant, which keeps V8 from a slower path (VectorQuantize's max(d, 1e-8) over its distance
 * matrix; bench/README.md, "max and min inline in the JS loops", has the measurement).
 */
function pick(x: string, y: string, op: '>' | '<', helper: string): string {
  if (!simple(x) || !simple(y)) return `${helper}(${x}, ${y})`
  return `(${x} !== ${x} ? ${x} : ${y} !== ${y} ? ${y} : ${x} ${op} ${y} ? ${x} : ${y})`
}

function elementwise(prim: TablePrim, dt: DType, a: readonly string[]): string {
  return jsOps[prim](dt === 'float32', a[0]!, a[1]!)
}

/** Helpers every generated kernel closes over; their semantics are the reference's. */
export const kernelHelpers = {
  F: Math.fround,
  TANH: fastTanh,
  // the 2^(k/32) table of the inline tanh (see Emitter.tanh)
  TANH_TAB,
  // the sign of the inline round half to even (see Emitter.roundInline)
  SGN: signOf,
  EXP: expF32,
  // each kernel gets its own (the function owns a scratch buffer): see loops.ts
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

