import type { Eqn, Program, Var } from '../program.js'
import { makeProgram } from '../program.js'
import { ProgramGraph } from '../lower/schedule/graph.js'

/**
 * A value that an argmin or argmax selects over and that the program also returns through a
 * reshape (VectorQuantize's distances: `extra.codebook_dist`, and the codes picked from them):
 * the selection reads the returned buffer, through a reshape back, instead of its own copy of the
 * value's computation. A loop planner stores outputs but inlines elementwise values into every
 * loop that reads them, and a selection's loop takes no side outputs (it stops at the first NaN),
 * so the distances' epilogue (the square root over the whole matrix) ran twice. Same bits: a
 * reshape moves nothing. Other readers are left as they are, so sums keep fusing their side
 * outputs (FSQ's codes and index sum).
 */
export function readReturnedSelections(p: Program): Program {
  const isSelect = (e: Eqn) => e.prim === 'argmin' || e.prim === 'argmax'
  // most programs have no selection: nothing to walk on their compile
  if (!p.eqns.some(isSelect)) return p
  const g = new ProgramGraph(p)
  // per value: the reshape that returns it, where a selection reads it too
  const returned = new Map<number, Eqn>()
  for (const e of p.eqns) {
    const us = g.uses(e.out)
    if (g.isOutput(e.out) || !us.some(isSelect)) continue
    const r = us.find((u) => u.prim === 'reshape' && g.isOutput(u.out))
    if (r) returned.set(e.out.id, r)
  }
  if (returned.size === 0) return p
  let nextId = 1 + Math.max(0, ...p.inputs.map((v) => v.id), ...p.eqns.map((e) => e.out.id))
  const rename = new Map<number, Var>()
  const moved = new Set<Eqn>()
  const eqns: Eqn[] = []
  for (const e of p.eqns) {
    if (moved.has(e)) continue
    eqns.push(isSelect(e) ? ({ ...e, inputs: e.inputs.map((v) => rename.get(v.id) ?? v) } as Eqn) : e)
    const r = returned.get(e.out.id)
    if (!r) continue
    // the returning reshape right after the value (its only input), then the value read back from
    // it for the selections
    eqns.push({ ...r, inputs: [e.out] } as Eqn)
    moved.add(r)
    const back: Var = { id: nextId++, aval: e.out.aval }
    eqns.push({ prim: 'reshape', params: { shape: [...e.out.aval.shape] }, inputs: [r.out], out: back } as Eqn)
    rename.set(e.out.id, back)
  }
  return makeProgram(p.inputs, eqns, p.outputs)
}
