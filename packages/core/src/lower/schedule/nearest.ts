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
  /**
   * 1 (-1) when the epilogue is non-decreasing (non-increasing) in the dot product in float32
   * arithmetic for any fixed terms: every op on the path from the dot is monotone in it (add,
   * sub, neg, max, min, sqrt, and mul or div by a term that is a finite nonzero constant). Then
   * bounds on a dot product bound its distance through the same float32 ops, which lets a
   * backend screen codes with a cheaper, less precise dot product and rescore only those the
   * bounds cannot rule out. Absent where that does not hold (abs, a dot in a divisor, a product
   * with a term of unknown sign).
   */
  readonly slope?: 1 | -1
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
  const slope = epilogueSlope(epilogue, terms.map((t) => constantSign(t.v, g)))
  return { select: e, matmul: matmul as EqnOf<'matmul'>, epilogue, terms, ...(slope ? { slope } : {}) }
}

/** The sign of a finite nonzero constant (a `full`, through broadcasts and reshapes), else undefined. */
function constantSign(v: Var, g: ProgramGraph): 1 | -1 | undefined {
  for (let d = g.def(v); d; d = g.def(d.inputs[0]!)) {
    if (d.prim === 'full') {
      const x = d.params.value
      return Number.isFinite(x) && x !== 0 ? (x > 0 ? 1 : -1) : undefined
    }
    if (d.prim !== 'broadcast' && d.prim !== 'reshape') return undefined
  }
  return undefined
}

/**
 * Direction of f in the dot product: 1 or -1 when monotone, 0 when f does not depend on it,
 * undefined when neither (see NearestPattern.slope). Float32 rounding to nearest is monotone,
 * so each op keeps the direction its exact counterpart has.
 */
export function epilogueSlope(f: Epilogue, termSigns: readonly (1 | -1 | undefined)[]): 1 | -1 | undefined {
  type Dir = 1 | -1 | 0 | undefined
  const flip = (d: Dir): Dir => (d === 1 || d === -1 ? (-d as 1 | -1) : d)
  const both = (a: Dir, b: Dir): Dir => (a === undefined || b === undefined ? undefined : a === 0 ? b : b === 0 || a === b ? a : undefined)
  // d (the direction of one factor) times a factor that does not depend on the dot: known only for a constant term
  const scaled = (d: Dir, by: Epilogue): Dir => {
    if (d === 0 || d === undefined) return d
    const s = by.op === 'term' ? termSigns[by.k] : undefined
    return s === undefined ? undefined : ((d * s) as 1 | -1)
  }
  const dir = (x: Epilogue): Dir => {
    switch (x.op) {
      case 'dot': return 1
      case 'term': return 0
      case 'neg': return flip(dir(x.a))
      case 'sqrt': return dir(x.a)
      case 'abs': return dir(x.a) === 0 ? 0 : undefined
      case 'add': case 'max': case 'min': return both(dir(x.a), dir(x.b))
      case 'sub': return both(dir(x.a), flip(dir(x.b)))
      case 'mul': {
        const da = dir(x.a), db = dir(x.b)
        return db === 0 ? scaled(da, x.b) : da === 0 ? scaled(db, x.a) : undefined
      }
      case 'div': return dir(x.b) === 0 ? scaled(dir(x.a), x.b) : undefined
    }
  }
  const d = dir(f)
  return d === 1 || d === -1 ? d : undefined
}
