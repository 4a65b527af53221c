import type { Caps } from '../backend.js'
import { fmtAval, shapeEq } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import type { Prim } from '../prim.js'

/**
 * How a primitive's result is compared with the reference.
 * - exact: copies, selections, index and integer results: any difference is a wrong answer.
 * - float: one correctly rounded float op (add, sub, mul): atol + rtol * |want|.
 * - transcendental: as float plus transcendentalRtol * |want| (exp, log, div, pow, ...).
 * - accumulate: sums and dot products: the error of a float sum scales with the sum of the
 *   magnitudes of its terms, not with the (possibly cancelled) result, so the relative term
 *   uses `magnitude` = the same program run on |inputs| (for sums and products of inputs that is
 *   exactly the sum of |terms|).
 */
export type TolClass = 'exact' | 'float' | 'transcendental' | 'accumulate'

export const transcendentalPrims: ReadonlySet<Prim> = new Set<Prim>(['exp', 'log', 'tanh', 'atanh', 'pow', 'sqrt', 'recip', 'div'])

export const tolClassOf: { readonly [P in Prim]: TolClass } = {
  neg: 'exact', abs: 'exact', sign: 'exact', floor: 'exact', round: 'exact', cast: 'exact', stop_gradient: 'exact',
  exp: 'transcendental', log: 'transcendental', sqrt: 'transcendental', tanh: 'transcendental',
  atanh: 'transcendental', recip: 'transcendental', div: 'transcendental', pow: 'transcendental',
  add: 'float', sub: 'float', mul: 'float',
  idiv: 'exact', mod: 'exact', max: 'exact', min: 'exact', lt: 'exact', le: 'exact', eq: 'exact', where: 'exact',
  reshape: 'exact', broadcast: 'exact', transpose: 'exact', slice: 'exact', pad: 'exact', concat: 'exact',
  reduce_sum: 'accumulate', reduce_max: 'exact', reduce_min: 'exact', argmin: 'exact', argmax: 'exact',
  matmul: 'accumulate', gather: 'exact', iota: 'exact', full: 'exact', constant: 'exact', random_uniform: 'exact',
}

/** A per-element bound on |got - want|, given the reference value and the magnitude of its terms. */
export type Tolerance = (want: number, magnitude: number) => number

export function toleranceFor(cls: TolClass, caps: Caps): Tolerance {
  switch (cls) {
    case 'exact':
      return () => 0
    case 'float':
      return (w) => caps.atol + caps.rtol * Math.abs(w)
    case 'transcendental':
      return (w) => caps.atol + (caps.rtol + caps.transcendentalRtol) * Math.abs(w)
    case 'accumulate':
      return (w, m) => caps.atol + caps.rtol * Math.max(Math.abs(w), Math.abs(m))
  }
}

export interface Mismatch {
  readonly output: number
  readonly message: string
}

/**
 * Compare a backend's outputs with the reference's. Integer and bool outputs must match exactly;
 * floats within `tol`. NaN and ±Inf in the reference must be reproduced exactly when
 * `strictNaN`; otherwise those elements are not compared. Returns the first mismatch or null.
 */
export function compareOutputs(
  got: readonly HostTensor[],
  want: readonly HostTensor[],
  tol: Tolerance,
  opts: { strictNaN: boolean; magnitude?: readonly HostTensor[] },
): Mismatch | null {
  if (got.length !== want.length) return { output: -1, message: `expected ${want.length} output(s), got ${got.length}` }
  for (let o = 0; o < want.length; o++) {
    const g = got[o]!, w = want[o]!
    if (g.dtype !== w.dtype || !shapeEq(g.shape, w.shape))
      return { output: o, message: `output ${o} is ${fmtAval(g)}; expected ${fmtAval(w)}` }
    if (g.data.length !== w.data.length)
      return { output: o, message: `output ${o} has ${g.data.length} elements; expected ${w.data.length}` }
    const mag = opts.magnitude?.[o]?.data
    for (let i = 0; i < w.data.length; i++) {
      const gv = g.data[i]!, wv = w.data[i]!
      if (w.dtype !== 'float32') {
        if (gv !== wv) return { output: o, message: `output ${o} element ${i}: got ${gv}, want ${wv} (${w.dtype}, exact)` }
        continue
      }
      if (!Number.isFinite(wv)) {
        if (!opts.strictNaN) continue
        if (!Object.is(gv, wv) && !(Number.isNaN(gv) && Number.isNaN(wv)))
          return { output: o, message: `output ${o} element ${i}: got ${gv}, want ${wv} (caps.strictNaN)` }
        continue
      }
      const bound = tol(wv, mag ? mag[i]! : wv)
      const err = Math.abs(gv - wv)
      if (!(err <= bound))
        return { output: o, message: `output ${o} element ${i}: got ${gv}, want ${wv}, |err| ${err} > tolerance ${bound}` }
    }
  }
  return null
}
