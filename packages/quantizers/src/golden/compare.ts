import type { HostTensor } from '@tessera/core'
import { fmtShape, shapeEq } from '@tessera/core'
import type { GoldenTensor } from './format.js'

/** One compared output of a case. */
export interface Check {
  readonly name: string
  readonly kind: 'float' | 'index'
  readonly ok: boolean
  /** float: worst |got - want| / max(1, |want|); index: 0 */
  readonly worst: number
  /** index/bool: elements that differ; float: elements outside the tolerance */
  readonly mismatches: number
  readonly note?: string
}

/** Floats agree within 1e-5, absolute on O(1) values and relative on large ones. */
export const FLOAT_TOL = 1e-5

export function compareTensor(name: string, got: HostTensor | undefined, want: GoldenTensor): Check {
  const kind = want.refDtype === 'float32' ? 'float' : 'index'
  if (!got) return { name, kind, ok: false, worst: Infinity, mismatches: want.host.data.length, note: 'not produced' }
  if (!shapeEq(got.shape, want.host.shape))
    return { name, kind, ok: false, worst: Infinity, mismatches: want.host.data.length, note: `shape ${fmtShape(got.shape)}, expected ${fmtShape(want.host.shape)}` }
  const a = got.data, b = want.host.data
  let worst = 0, mismatches = 0
  for (let i = 0; i < b.length; i++) {
    const g = a[i]!, w = b[i]!
    if (kind === 'index') {
      if (g !== w) mismatches++
    } else {
      const err = Number.isNaN(g) || Number.isNaN(w) ? (Number.isNaN(g) && Number.isNaN(w) ? 0 : Infinity) : Math.abs(g - w) / Math.max(1, Math.abs(w))
      if (err > worst) worst = err
      if (!(err <= FLOAT_TOL)) mismatches++
    }
  }
  return { name, kind, ok: mismatches === 0, worst, mismatches }
}
