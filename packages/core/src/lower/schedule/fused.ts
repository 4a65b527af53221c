import type { Prim } from '../../prim.js'
import { costlyPrims } from '../../prim.js'
import type { Var } from '../../program.js'
import type { ProgramGraph } from './graph.js'
import type { LoopStep } from './steps.js'

/** The roots a step's loop evaluates, and the stored values it computes itself (never read from memory). */
function rootsOf(st: LoopStep): { roots: Var[]; selves: ReadonlySet<number> } | undefined {
  switch (st.kind) {
    case 'loop': return { roots: [st.out], selves: new Set([st.out.id]) }
    case 'reduce': return { roots: [st.eqn.inputs[0]!, ...st.sides], selves: new Set(st.sides.map((v) => v.id)) }
    default: return undefined
  }
}

/**
 * Walks the fused expressions of a loop step: `leaf` sees each stored value it reads, `node`
 * each equation it evaluates inline.
 */
function walkFused(st: LoopStep, g: ProgramGraph, stored: ReadonlySet<number>, leaf: (v: Var) => void, node: (p: Prim) => void): void {
  const r = rootsOf(st)
  if (!r) return
  const seen = new Set<number>()
  const visit = (v: Var): void => {
    if (seen.has(v.id)) return
    seen.add(v.id)
    if (stored.has(v.id) && !r.selves.has(v.id)) return leaf(v)
    const e = g.def(v)
    if (!e) return leaf(v)
    node(e.prim)
    e.inputs.forEach(visit)
  }
  r.roots.forEach(visit)
}

/** Stored values a step reads; `undefined` stands for "any" (a step whose reads are not tracked). */
export function readsOf(st: LoopStep, g: ProgramGraph, stored: ReadonlySet<number>): Var[] | undefined {
  switch (st.kind) {
    case 'loop': case 'reduce': {
      const out: Var[] = []
      walkFused(st, g, stored, (v) => out.push(v), () => {})
      return out
    }
    case 'matmul': case 'host': return [...st.eqn.inputs]
    case 'expMap': return [st.pattern.base, ...st.pattern.rows]
    case 'nearest': return undefined
  }
}


/** Whether a step's work per element is large enough to be worth sharing with threads. */
export function isHeavy(st: LoopStep, g: ProgramGraph, stored: ReadonlySet<number>): boolean {
  if (st.kind === 'matmul' || st.kind === 'expMap') return true
  let heavy = false
  walkFused(st, g, stored, () => {}, (p) => (heavy ||= costlyPrims.has(p)))
  return heavy
}
