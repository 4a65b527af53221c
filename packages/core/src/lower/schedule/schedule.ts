import { refuseCollectives } from '../../distributed/refuse.js'
import type { EqnOf, Program } from '../../program.js'
import type { ExpMapPattern, ExpMapShape } from './exp-map.js'
import { expPrologue } from './exp-map.js'
import { ProgramGraph, sizeOfVar } from './graph.js'
import type { NearestPattern } from './nearest.js'
import { matchNearest } from './nearest.js'
import type { RowOptions } from './rows.js'
import { formRowChain } from './rows.js'
import { sideOutputsOf } from './side-outputs.js'
import { decideStorage, isReduction, ownLoop } from './storage.js'
import type { LoopStep, ScheduleStep } from './steps.js'

/**
 * What a loop backend can run beyond plain fused loops: each pattern is planned only when the
 * backend has a kernel for it. Sizes are in elements.
 */
export interface ScheduleOptions {
  /** Distance-then-argmin as one nearest-code step. */
  readonly nearest: boolean
  /** Large float32 exps as maps over a stored base, from `minElems` elements. */
  readonly expMap?: ExpMapShape & { readonly minElems: number }
  /** Row chains: omitted, no chains are formed. */
  readonly rows?: RowOptions
}

/** A program planned for a loop backend: which values are stored, and the steps that compute them. */
export interface LoopSchedule {
  readonly graph: ProgramGraph
  /** Ids of stored variables (program inputs included). */
  readonly stored: ReadonlySet<number>
  readonly steps: readonly ScheduleStep[]
}

/**
 * Plans a program for a loop backend: decides which values are stored and which are recomputed
 * inline, recognizes the patterns the backend has kernels for (nearest-code search, exp maps),
 * fuses side outputs into reductions, and runs row-independent steps block by block when that
 * keeps a large intermediate out of memory or lets threads share the work.
 */
export function scheduleLoops(program: Program, opts: ScheduleOptions): LoopSchedule {
  refuseCollectives(program, 'scheduleLoops')
  const g = new ProgramGraph(program)
  const stored = decideStorage(g)
  const isStored = (v: { id: number }) => stored.has(v.id)

  const mapped = new Map<number, ExpMapPattern>()
  if (opts.expMap) {
    for (const e of program.eqns) {
      if (e.prim !== 'exp' || e.out.aval.dtype !== 'float32' || sizeOfVar(e.out) < opts.expMap.minElems) continue
      const arg = e.inputs[0]!
      const pro = expPrologue(arg, g, isStored, opts.expMap)
      mapped.set(e.out.id, pro ?? { base: arg, rows: [], ops: [] })
      stored.add(e.out.id)
      if (!pro) stored.add(arg.id)
    }
  }

  // the nearest-code pattern keeps its matmul out of memory: the matmul is then not stored
  const nearest = new Map<number, NearestPattern>()
  if (opts.nearest) {
    for (const e of program.eqns) {
      if (e.prim !== 'argmin' && e.prim !== 'argmax') continue
      const m = matchNearest(e as EqnOf<'argmin'> | EqnOf<'argmax'>, g, isStored)
      if (!m) continue
      nearest.set(e.out.id, m)
      stored.delete(m.matmul.out.id)
      // B stored only because the matmul reads buffers (a transposed codebook): a nearest kernel
      // packs B through its definition, so that packed copy is the only one
      const b = m.matmul.inputs[1]!
      const bDef = g.def(b)
      if (bDef && !ownLoop(bDef.prim) && !g.isOutput(b) && g.uses(b).length === 1) stored.delete(b.id)
    }
  }

  // values computed by a step of their own (never a side output of a loop)
  const absorbed = new Set([...nearest.values()].map((n) => n.matmul.out.id))
  const sides = sideOutputsOf(g, stored, absorbed, new Set(mapped.keys()))
  const steps: LoopStep[] = []
  for (const e of program.eqns) {
    const v = e.out
    if (!stored.has(v.id) || absorbed.has(v.id) || !g.isLive(v)) continue
    const mp = mapped.get(v.id)
    const near = nearest.get(v.id)
    if (mp) steps.push({ kind: 'expMap', out: v, pattern: mp })
    else if (near) steps.push({ kind: 'nearest', pattern: near })
    else if (isReduction(e.prim)) steps.push({ kind: 'reduce', eqn: e, sides: sides.get(v.id) ?? [] })
    else if (e.prim === 'matmul') steps.push({ kind: 'matmul', eqn: e as EqnOf<'matmul'> })
    else if (ownLoop(e.prim)) steps.push({ kind: 'host', eqn: e })
    else steps.push({ kind: 'loop', out: v })
  }
  const planned = opts.rows ? formRowChain(steps, { g, stored }, opts.rows) : steps
  return { graph: g, stored, steps: planned }
}

