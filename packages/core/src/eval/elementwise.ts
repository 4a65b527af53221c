import { allocate } from '../dtype.js'
import type { ElemPrim } from '../prim.js'
import { elementwisePrims, primFacts } from '../prim.js'
import type { Scalar1, Scalar2, Scalar3 } from '../scalar.js'
import { scalarFn } from '../scalar.js'
import type { Impl } from './impl.js'

/**
 * Elementwise primitives in the reference: one loop over the operands applying the primitive's
 * scalar rule (scalar.ts), the same function the fused-plan interpreter applies per node. The
 * loops are built from each primitive's arity in the facts table, so a new elementwise primitive
 * needs only its scalar rule here.
 */
const unary =
  (p: ElemPrim): Impl<ElemPrim> =>
  (ins, _params, out) => {
    const a = ins[0]!.data
    const f = scalarFn(p, ins[0]!.dtype) as Scalar1
    const r = allocate(out.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!)
    return r
  }

const binary =
  (p: ElemPrim): Impl<ElemPrim> =>
  (ins, _params, out) => {
    const a = ins[0]!.data, b = ins[1]!.data
    const f = scalarFn(p, ins[0]!.dtype) as Scalar2
    const r = allocate(out.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!, b[i]!)
    return r
  }

// the rule is keyed by the branches' dtype (operand 1), not the condition's
const ternary =
  (p: ElemPrim): Impl<ElemPrim> =>
  (ins, _params, out) => {
    const c = ins[0]!.data, a = ins[1]!.data, b = ins[2]!.data
    const f = scalarFn(p, ins[1]!.dtype) as Scalar3
    const r = allocate(out.dtype, c.length)
    for (let i = 0; i < c.length; i++) r[i] = f(c[i]!, a[i]!, b[i]!)
    return r
  }

const byArity = { unary, binary, ternary } as const

/** The two that differ from the arity loops: cast picks its rule by the target dtype, and stop_gradient is a plain copy. */
const special: { readonly [P in 'cast' | 'stop_gradient']: Impl<P> } = {
  cast: (ins, p) => {
    const a = ins[0]!.data
    const f = scalarFn('cast', p.dtype)
    const r = allocate(p.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!)
    return r
  },
  // a copy keeps NaN payload bits, which a store through a JS number need not
  stop_gradient: (ins) => ins[0]!.data.slice(),
}

function build(): { readonly [P in ElemPrim]: Impl<P> } {
  const out: Partial<Record<ElemPrim, Impl<ElemPrim>>> = {}
  for (const p of elementwisePrims) out[p] = byArity[primFacts[p].kind](p)
  return { ...out, ...special } as { readonly [P in ElemPrim]: Impl<P> }
}

export const elementwiseImpls = build()
