import type { AnyTypedArray, Aval } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import type { Prim, PrimParams } from '../prim.js'

/** How the reference computes one primitive: its operands' data in, the result's data out. */
export type Impl<P extends Prim> = (ins: readonly HostTensor[], params: PrimParams[P], out: Aval) => AnyTypedArray

/** The reference's table: one implementation per primitive (a missing one fails tsc). */
export type ImplTable = { readonly [P in Prim]: Impl<P> }
