import type { Prim } from './prim.js'

/**
 * What the rest of Tessera needs to know about each primitive besides its params and shape rule.
 * One row per primitive, checked by the type checker: a primitive added to `PrimParams` without a
 * row here fails `tsc`. The sets other modules used to keep by hand (transcendental ops,
 * non-differentiable ops, elementwise/row-safe ops) are derived from these rows.
 */
export type PrimKind = 'unary' | 'binary' | 'ternary' | 'movement' | 'reduce' | 'argreduce' | 'matmul' | 'gather' | 'source' | 'collective'

/**
 * How a primitive's result is compared with the reference.
 * - exact: copies, selections, index and integer results: any difference is a wrong answer.
 * - float: one correctly rounded float op (add, sub, mul): atol + rtol * |want|.
 * - transcendental: as float plus transcendentalRtol * |want| (exp, log, div, pow, ...): ops a
 *   backend computes with a library or hardware approximation rather than one rounding.
 * - accumulate: sums and dot products: the error of a float sum scales with the sum of the
 *   magnitudes of its terms, not with the (possibly cancelled) result, so the relative term
 *   uses `magnitude` = the same program run on |inputs| (for sums and products of inputs that is
 *   exactly the sum of |terms|).
 */
export type TolClass = 'exact' | 'float' | 'transcendental' | 'accumulate'

export interface PrimFacts {
  readonly kind: PrimKind
  /**
   * False when the output never carries a gradient whatever its inputs (comparisons, rounding,
   * index results, sources): autodiff's activity analysis stops there.
   */
  readonly differentiable: boolean
  readonly tol: TolClass
  /**
   * Evaluated by a library function or a long series (exp, log, tanh, atanh, pow), not a single
   * instruction: a planner stores such a value once rather than recompute it per reader, and
   * counts loops that evaluate it as worth sharing with threads.
   */
  readonly costly: boolean
}

const fact = <K extends PrimKind, T extends TolClass>(kind: K, differentiable: boolean, tol: T, costly = false) => ({ kind, differentiable, tol, costly })
const D = true, N = false, COSTLY = true

// `satisfies` keeps each row's literal kind, so `ElemPrim` below is computed from this table
export const primFacts = {
  neg: fact('unary', D, 'exact'),
  exp: fact('unary', D, 'transcendental', COSTLY),
  log: fact('unary', D, 'transcendental', COSTLY),
  sqrt: fact('unary', D, 'transcendental'),
  tanh: fact('unary', D, 'transcendental', COSTLY),
  atanh: fact('unary', D, 'transcendental', COSTLY),
  abs: fact('unary', D, 'exact'),
  sign: fact('unary', N, 'exact'),
  floor: fact('unary', N, 'exact'),
  round: fact('unary', N, 'exact'),
  recip: fact('unary', D, 'transcendental'),
  cast: fact('unary', D, 'exact'),
  stop_gradient: fact('unary', N, 'exact'),
  add: fact('binary', D, 'float'),
  sub: fact('binary', D, 'float'),
  mul: fact('binary', D, 'float'),
  div: fact('binary', D, 'transcendental'),
  idiv: fact('binary', N, 'exact'),
  mod: fact('binary', N, 'exact'),
  pow: fact('binary', D, 'transcendental', COSTLY),
  max: fact('binary', D, 'exact'),
  min: fact('binary', D, 'exact'),
  lt: fact('binary', N, 'exact'),
  le: fact('binary', N, 'exact'),
  eq: fact('binary', N, 'exact'),
  where: fact('ternary', D, 'exact'),
  reshape: fact('movement', D, 'exact'),
  broadcast: fact('movement', D, 'exact'),
  transpose: fact('movement', D, 'exact'),
  slice: fact('movement', D, 'exact'),
  pad: fact('movement', D, 'exact'),
  concat: fact('movement', D, 'exact'),
  reduce_sum: fact('reduce', D, 'accumulate'),
  reduce_max: fact('reduce', D, 'exact'),
  reduce_min: fact('reduce', D, 'exact'),
  argmin: fact('argreduce', N, 'exact'),
  argmax: fact('argreduce', N, 'exact'),
  matmul: fact('matmul', D, 'accumulate'),
  gather: fact('gather', D, 'exact'),
  iota: fact('source', N, 'exact'),
  full: fact('source', N, 'exact'),
  constant: fact('source', N, 'exact'),
  random_uniform: fact('source', N, 'exact'),
  // values from the other ranks (distributed/): no backend computes these, runCollective does
  all_reduce: fact('collective', D, 'accumulate'),
  axis_index: fact('collective', N, 'exact'),
} as const satisfies { readonly [P in Prim]: PrimFacts }

type FactsOf = typeof primFacts

/** Elementwise primitives: each output element depends only on the same element of each operand. */
export type ElemPrim = { [P in Prim]: FactsOf[P]['kind'] extends 'unary' | 'binary' | 'ternary' ? P : never }[Prim]

/** A table over every primitive, built from its facts row (for the derived per-primitive tables). */
function mapPrims<T>(f: (p: Prim) => T): { readonly [P in Prim]: T } {
  const out = {} as { [P in Prim]: T }
  for (const p of Object.keys(primFacts) as Prim[]) out[p] = f(p)
  return out
}

export const primKind: { readonly [P in Prim]: PrimKind } = mapPrims((p) => primFacts[p].kind)

/** Test tolerance class of every primitive (`@tessera/core/testing` compares with it). */
export const tolClassOf: { readonly [P in Prim]: TolClass } = mapPrims((p) => primFacts[p].tol)

const primsWhere = (pred: (f: PrimFacts) => boolean): ReadonlySet<Prim> =>
  new Set((Object.keys(primFacts) as Prim[]).filter((p) => pred(primFacts[p])))

export const isElemPrim = (p: Prim): p is ElemPrim => {
  const k = primFacts[p].kind
  return k === 'unary' || k === 'binary' || k === 'ternary'
}

/**
 * Elementwise primitives. They are also the row-safe ones: run on a block of rows, each gives
 * exactly the rows of its full result, so row blocking may cut through them.
 */
export const elementwisePrims: ReadonlySet<ElemPrim> = primsWhere((f) => f.kind === 'unary' || f.kind === 'binary' || f.kind === 'ternary') as ReadonlySet<ElemPrim>

/** Primitives a backend computes with an approximation (library or hardware), not one rounding. */
export const transcendentalPrims: ReadonlySet<Prim> = primsWhere((f) => f.tol === 'transcendental')

/** Primitives evaluated by a costly function (see PrimFacts.costly). */
export const costlyPrims: ReadonlySet<Prim> = primsWhere((f) => f.costly)

/** Collectives: their values come from the other ranks, so only `runCollective` can resolve them. */
export const collectivePrims: ReadonlySet<Prim> = primsWhere((f) => f.kind === 'collective')

/** Primitives whose output never carries a gradient (autodiff's activity analysis stops there). */
export const nonDifferentiablePrims: ReadonlySet<Prim> = primsWhere((f) => !f.differentiable)
