import type { EqnOf, Var } from '../../program.js'
import type { Eqn } from '../../program.js'
import { axisDependence } from './axis-deps.js'
import type { ProgramGraph } from './graph.js'

/**
 * The nearest-code pattern: `argmin_j f(dot(a_i, b_:j), row terms_i, column terms_j)` over the
 * last axis (or argmax, which is argmin of -f, exactly: negation keeps ties and NaNs), where
 * `dot` is a matmul read nowhere else, with no batch axes or only batch axes of size 1 (a
 * single codebook's (1, N, K) distances), and f is a chain of float32
 * add/sub/mul/div/max/min/neg/abs/sqrt. A backend that recognizes it computes distances tile by
 * tile and reduces them to an argmin at once, so the m x n distance matrix is never stored.
 * Row and column terms (|x|^2, |c|^2) are any subexpressions that depend on only one of the two
 * axes; they are evaluated first, per row and per column.
 */
export type Epilogue =
  | { readonly op: 'dot' }
  | { readonly op: 'term'; readonly k: number }
  | { readonly op: 'neg' | 'abs' | 'sqrt'; readonly a: Epilogue }
  | { readonly op: 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min'; readonly a: Epilogue; readonly b: Epilogue }

export interface NearestTerm {
  readonly v: Var
  /** 'row': depends on i only; 'col': on j only (or on neither). */
  readonly dep: 'row' | 'col'
}

export interface NearestPattern {
  /** The argmin (or argmax) over the last axis; `epilogue` already negates for an argmax. */
  readonly select: EqnOf<'argmin'> | EqnOf<'argmax'>
  readonly matmul: EqnOf<'matmul'>
  readonly epilogue: Epilogue
  readonly terms: readonly NearestTerm[]
}

const UNARY: ReadonlySet<string> = new Set(['neg', 'abs', 'sqrt'])
const BINARY: ReadonlySet<string> = new Set(['add', 'sub', 'mul', 'div', 'max', 'min'])

/** Rows and columns of a pattern: the last two axes of the selected distances. */
export function nearestDims(p: NearestPattern): { readonly m: number; readonly n: number; readonly k: number } {
  const s = p.select.inputs[0]!.aval.shape
  const a = p.matmul.inputs[0]!.aval.shape
  return { m: s[s.length - 2]!, n: s[s.length - 1]!, k: a[a.length - 1]! }
}

export function matchNearest(e: EqnOf<'argmin'> | EqnOf<'argmax'>, g: ProgramGraph, isStored: (v: Var) => boolean): NearestPattern | undefined {
  const x = e.inputs[0]!
  const r = x.aval.shape.length
  if (r < 2 || e.params.axis !== r - 1 || x.aval.dtype !== 'float32') return undefined
  if (x.aval.shape.slice(0, -2).some((d) => d !== 1)) return undefined
  // empty rows, columns or dot products: a tiled kernel's loops run at least once, so leave those to the generic path
  if (x.aval.shape.some((s) => s === 0)) return undefined
  let matmul: Eqn | undefined
  const terms: NearestTerm[] = []
  const containsDot = (v: Var, seen = new Set<number>()): boolean => {
    if (seen.has(v.id)) return false
    seen.add(v.id)
    const d = g.def(v)
    if (!d) return false
    if (d.prim === 'matmul') return true
    if (isStored(v)) return false
    return d.inputs.some((u) => containsDot(u, seen))
  }
  const walk = (v: Var): Epilogue | undefined => {
    const d = g.def(v)
    if (d && d.prim === 'matmul') {
      if (matmul && matmul !== d) return undefined
      if (g.uses(v).length !== 1 || g.isOutput(v) || v.aval.shape.length !== r) return undefined
      matmul = d
      return { op: 'dot' }
    }
    if (!containsDot(v)) {
      const deps = axisDependence(v, g, isStored)
      // bits of the last two axes (batch axes have size 1: nothing depends on them)
      const row = 1 << (r - 2), col = 1 << (r - 1)
      if (deps !== undefined && v.aval.shape.length === r && !(deps & row && deps & col)) {
        terms.push({ v, dep: deps & row ? 'row' : 'col' })
        return { op: 'term', k: terms.length - 1 }
      }
      // a value of both axes without the dot (|x|^2 + |c|^2): split into its terms below
    }
    // an intermediate distance read by anything else would need the dot product stored
    if (!d || isStored(v) || g.uses(v).length !== 1 || g.isOutput(v) || d.inputs.some((u) => u.aval.dtype !== 'float32')) return undefined
    if (UNARY.has(d.prim)) {
      const a = walk(d.inputs[0]!)
      return a && ({ op: d.prim, a } as Epilogue)
    }
    if (BINARY.has(d.prim)) {
      const a = walk(d.inputs[0]!)
      const b = a && walk(d.inputs[1]!)
      return b && ({ op: d.prim, a: a!, b } as Epilogue)
    }
    return undefined
  }
  const f = walk(x)
  if (!f || !matmul || matmul.inputs[0]!.aval.shape[r - 1] === 0) return undefined
  const epilogue: Epilogue = e.prim === 'argmax' ? { op: 'neg', a: f } : f
  return { select: e, matmul: matmul as EqnOf<'matmul'>, epilogue, terms }
}
