import type { DType } from './dtype.js'
import { TesseraError } from './error.js'
import type { ElemPrim, primFacts } from './prim.js'

/**
 * Scalar semantics of every elementwise primitive: the one definition the reference evaluator
 * and the fused-plan interpreter both compute with (GPU and WebAssembly codegen are measured
 * against it by the conformance suite).
 *
 * Each entry maps an operand dtype to a function on JS numbers that returns exactly the value the
 * result tensor holds: float32 results are rounded once with Math.fround (a correctly rounded
 * float32 op, since the double result of one op rounds to the same float32), int32 results wrap
 * like Int32Array stores, bool results are 0 or 1. A missing dtype is one the shape rule rejects.
 * Two entries are keyed differently: `cast` by its target dtype (what it computes depends only on
 * that), `where` by its branches' dtype.
 */
export type Scalar1 = (x: number) => number
export type Scalar2 = (x: number, y: number) => number
export type Scalar3 = (c: number, x: number, y: number) => number

type ArityOf<K> = K extends 'unary' ? Scalar1 : K extends 'binary' ? Scalar2 : Scalar3
/** The scalar function type of an elementwise primitive, by its arity in the facts table. */
export type ScalarFnOf<P extends ElemPrim> = ArityOf<(typeof primFacts)[P]['kind']>
export type ScalarRule<P extends ElemPrim> = { readonly [D in DType]?: ScalarFnOf<P> }

/** torch.round: half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x)
  return Math.abs(x % 1) === 0.5 ? 2 * Math.round(x / 2) : r
}

/** NaN wins (as in torch); for equal operands the second is returned, so max(0, -0) is -0 (Math.max gives 0). */
export const nanMax = (x: number, y: number) => (x !== x || y !== y ? NaN : x > y ? x : y)
export const nanMin = (x: number, y: number) => (x !== x || y !== y ? NaN : x < y ? x : y)

/** Python's // and % on int32; a zero divisor gives 0 instead of trapping. */
const floorDiv = (x: number, y: number) => (y === 0 ? 0 : Math.floor(x / y) | 0)
const floorMod = (x: number, y: number) => (y === 0 ? 0 : (x - y * Math.floor(x / y)) | 0)

/** float -> int32 truncates toward zero, saturates, and maps NaN to 0. */
const toInt32 = (x: number) => {
  if (x !== x) return 0
  const t = Math.trunc(x)
  return t > 2147483647 ? 2147483647 : t < -2147483648 ? -2147483648 : t
}

const fr = Math.fround
const f1 = (f: Scalar1): Scalar1 => (x) => fr(f(x))
const id: Scalar1 = (x) => x
const sign: Scalar1 = (x) => (x > 0 ? 1 : x < 0 ? -1 : x)
const bool2 = (f: (x: number, y: number) => boolean): Scalar2 => (x, y) => (f(x, y) ? 1 : 0)
const lt = bool2((x, y) => x < y)
const le = bool2((x, y) => x <= y)
const eq = bool2((x, y) => x === y)
const select: Scalar3 = (c, x, y) => (c ? x : y)

export const scalarRules: { readonly [P in ElemPrim]: ScalarRule<P> } = {
  neg: { float32: (x) => -x, int32: (x) => -x | 0 },
  exp: { float32: f1(Math.exp) },
  log: { float32: f1(Math.log) },
  sqrt: { float32: f1(Math.sqrt) },
  tanh: { float32: f1(Math.tanh) },
  atanh: { float32: f1(Math.atanh) },
  abs: { float32: Math.abs, int32: (x) => Math.abs(x) | 0 },
  sign: { float32: sign, int32: sign },
  floor: { float32: Math.floor },
  round: { float32: roundHalfEven },
  recip: { float32: (x) => fr(1 / x) },
  cast: { float32: fr, int32: toInt32, bool: (x) => (x !== 0 ? 1 : 0) },
  stop_gradient: { float32: id, int32: id, bool: id },
  add: { float32: (x, y) => fr(x + y), int32: (x, y) => (x + y) | 0 },
  sub: { float32: (x, y) => fr(x - y), int32: (x, y) => (x - y) | 0 },
  mul: { float32: (x, y) => fr(x * y), int32: Math.imul },
  div: { float32: (x, y) => fr(x / y) },
  idiv: { int32: floorDiv },
  mod: { int32: floorMod },
  pow: { float32: (x, y) => fr(Math.pow(x, y)) },
  max: { float32: nanMax, int32: nanMax },
  min: { float32: nanMin, int32: nanMin },
  lt: { float32: lt, int32: lt },
  le: { float32: le, int32: le },
  eq: { float32: eq, int32: eq, bool: eq },
  where: { float32: select, int32: select, bool: select },
}

/**
 * The scalar function of `prim` for operands of dtype `dtype` (for `cast` the target dtype, for
 * `where` the branches' dtype). Throws a `backend` error for a dtype the table does not define,
 * which only a program that skipped the shape rules can reach.
 */
export function scalarFn<P extends ElemPrim>(prim: P, dtype: DType): ScalarFnOf<P> {
  const f = (scalarRules[prim] as ScalarRule<P>)[dtype]
  if (!f) throw new TesseraError('backend', prim, `no scalar rule for ${prim} on ${dtype}`)
  return f
}

/** The value a literal holds in a tensor of `dtype` (float32 rounds, int32 truncates, bool tests != 0). */
export const castTo = (dtype: DType, x: number): number => scalarRules.cast[dtype]!(x)
