import type { Caps } from '../backend.js'
import { fmtAval, shapeEq } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import type { TolClass } from '../prim.js'

// the tolerance class is a column of core's per-primitive facts table; re-exported for tests
export type { TolClass } from '../prim.js'
export { tolClassOf, transcendentalPrims } from '../prim.js'

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
