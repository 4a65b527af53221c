import { allocate } from '../dtype.js'
import type { ElemPrim } from '../prim.js'
import type { Scalar1, Scalar2, Scalar3 } from '../scalar.js'
import { scalarFn } from '../scalar.js'
import type { Impl } from './impl.js'

/**
 * Elementwise primitives in the reference: one loop over the operands applying the primitive's
 * scalar rule (scalar.ts), the same function the fused-plan interpreter applies per node.
 */
const unary =
  <P extends ElemPrim>(p: P): Impl<P> =>
  (ins, _params, out) => {
    const a = ins[0]!.data
    const f = scalarFn(p, ins[0]!.dtype) as Scalar1
    const r = allocate(out.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!)
    return r
  }

const binary =
  <P extends ElemPrim>(p: P): Impl<P> =>
  (ins, _params, out) => {
    const a = ins[0]!.data, b = ins[1]!.data
    const f = scalarFn(p, ins[0]!.dtype) as Scalar2
    const r = allocate(out.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!, b[i]!)
    return r
  }

export const elementwiseImpls: { readonly [P in ElemPrim]: Impl<P> } = {
  neg: unary('neg'),
  exp: unary('exp'),
  log: unary('log'),
  sqrt: unary('sqrt'),
  tanh: unary('tanh'),
  atanh: unary('atanh'),
  abs: unary('abs'),
  sign: unary('sign'),
  floor: unary('floor'),
  round: unary('round'),
  recip: unary('recip'),
  // a plain copy: keeps NaN payload bits exactly as a store through a JS number might not
  stop_gradient: (ins) => ins[0]!.data.slice(),
  // keyed by the target dtype (see scalar.ts)
  cast: (ins, p) => {
    const a = ins[0]!.data
    const f = scalarFn('cast', p.dtype)
    const r = allocate(p.dtype, a.length)
    for (let i = 0; i < a.length; i++) r[i] = f(a[i]!)
    return r
  },
  add: binary('add'),
  sub: binary('sub'),
  mul: binary('mul'),
  div: binary('div'),
  idiv: binary('idiv'),
  mod: binary('mod'),
  pow: binary('pow'),
  max: binary('max'),
  min: binary('min'),
  lt: binary('lt'),
  le: binary('le'),
  eq: binary('eq'),
  where: (ins, _p, out) => {
    const c = ins[0]!.data, a = ins[1]!.data, b = ins[2]!.data
    const f = scalarFn('where', ins[1]!.dtype) as Scalar3
    const r = allocate(out.dtype, c.length)
    for (let i = 0; i < c.length; i++) r[i] = f(c[i]!, a[i]!, b[i]!)
    return r
  },
}
