import type { Shape } from '../../dtype.js'
import type { Var } from '../../program.js'
import type { ProgramGraph } from './graph.js'
import { isElementwise } from './graph.js'

/** The set of loop axes an index expression depends on, as a bit mask (axis k: bit k). */
type Deps = number

/** An index into a value: per-axis dependencies, a flat row-major offset's, or both. */
interface Ix {
  readonly axes?: readonly Deps[]
  readonly flat?: Deps
}

const flatOf = (ix: Ix, shape: Shape): Deps =>
  ix.flat ?? ix.axes!.reduce((acc, d, k) => (shape[k] === 1 ? acc : acc | d), 0)

const axesOf = (ix: Ix, shape: Shape): readonly Deps[] => {
  if (ix.axes !== undefined) return ix.axes
  if (shape.length === 1) return [ix.flat!]
  return shape.map((d) => (d === 1 ? 0 : ix.flat!))
}

/**
 * Which loop axes the value of `v` depends on when its fused expression is evaluated at
 * `axes` (one loop axis per dimension of `v`): movement ops remap indices, stored values are
 * read at their flat offset. Undefined when the expression holds something a fused loop
 * cannot evaluate inline. The nearest-code pattern uses it to tell row terms (|x|^2) from
 * column terms (|c|^2).
 */
export function axisDependence(v: Var, g: ProgramGraph, isStored: (v: Var) => boolean): Deps | undefined {
  const memo = new Map<string, Deps | undefined>()
  const value = (u: Var, ix: Ix): Deps | undefined => {
    const key = `${u.id}|${ix.flat ?? ''}|${ix.axes?.join(',') ?? ''}`
    if (memo.has(key)) return memo.get(key)
    const r = compute(u, ix)
    memo.set(key, r)
    return r
  }
  const compute = (u: Var, ix: Ix): Deps | undefined => {
    const shape = u.aval.shape
    if (isStored(u)) return flatOf(ix, shape)
    const e = g.def(u)
    if (!e) return undefined
    switch (e.prim) {
      case 'full': return 0
      case 'iota': return axesOf(ix, shape)[e.params.axis]!
      case 'reshape': return value(e.inputs[0]!, { flat: flatOf(ix, shape) })
      case 'broadcast': {
        const inShape = e.inputs[0]!.aval.shape
        const ax = axesOf(ix, shape)
        const off = shape.length - inShape.length
        return value(e.inputs[0]!, { axes: inShape.map((d, k) => (d === 1 ? 0 : ax[k + off]!)) })
      }
      case 'transpose': {
        const ax = axesOf(ix, shape)
        const inAx = new Array<Deps>(ax.length)
        e.params.perm.forEach((p, k) => (inAx[p] = ax[k]!))
        return value(e.inputs[0]!, { axes: inAx })
      }
      case 'slice': return value(e.inputs[0]!, { axes: axesOf(ix, shape) })
      default: {
        if (e.inputs.length === 0 || !isElementwise(e.prim)) return undefined
        let acc = 0
        for (const w of e.inputs) {
          const d = value(w, ix)
          if (d === undefined) return undefined
          acc |= d
        }
        return acc
      }
    }
  }
  return value(v, { axes: v.aval.shape.map((_, k) => 1 << k) })
}

