import type { Eqn, EqnOf, Program, Var } from '../program.js'
import { makeProgram } from '../program.js'

/**
 * A program cut at its collectives. Stage s holds the ordinary equations that depend on s rounds
 * of collectives; round s holds the all-reduces whose operands stage s (or earlier) computes. So
 * the runner alternates: stage 0, round 0, stage 1, round 1, ..., and the number of rounds is the
 * longest chain of all-reduces, never more (several independent all-reduces share a round).
 */
export interface StagedProgram {
  /** `stages[s].program` reads variables of the original program and defines the ones later steps need. */
  readonly stages: readonly { readonly program: Program }[]
  /** `rounds[s]`: the all-reduces resolved after stage s (possibly none). */
  readonly rounds: readonly (readonly EqnOf<'all_reduce'>[])[]
  /** The `axis_index` equations: the runner gives their outputs this rank (and checks their size). */
  readonly axisIndex: readonly EqnOf<'axis_index'>[]
  /** The original program's inputs and outputs. */
  readonly inputs: readonly Var[]
  readonly outputs: readonly Var[]
}

/** Splits `program` at its collectives (see `StagedProgram`); a program without any is one stage. */
export function splitStages(program: Program): StagedProgram {
  const level = new Map<number, number>()
  for (const v of program.inputs) level.set(v.id, 0)
  const stageEqns: Eqn[][] = [[]]
  const rounds: EqnOf<'all_reduce'>[][] = [[]]
  const axisIndex: EqnOf<'axis_index'>[] = []
  const ensure = (s: number) => {
    while (stageEqns.length <= s) stageEqns.push([])
    while (rounds.length <= s) rounds.push([])
  }
  for (const e of program.eqns) {
    if (e.prim === 'axis_index') {
      axisIndex.push(e)
      level.set(e.out.id, 0)
      continue
    }
    const l = e.inputs.reduce((m, v) => Math.max(m, level.get(v.id) ?? 0), 0)
    ensure(l + (e.prim === 'all_reduce' ? 1 : 0))
    if (e.prim === 'all_reduce') {
      rounds[l]!.push(e)
      level.set(e.out.id, l + 1)
    } else {
      stageEqns[l]!.push(e)
      level.set(e.out.id, l)
    }
  }
  // what each later step reads: stages' operands, rounds' operands, the program's outputs
  const readAfter = (s: number): Set<number> => {
    const ids = new Set<number>(program.outputs.map((v) => v.id))
    for (let t = s + 1; t < stageEqns.length; t++) for (const e of stageEqns[t]!) for (const v of e.inputs) ids.add(v.id)
    for (let t = s; t < rounds.length; t++) for (const e of rounds[t]!) ids.add(e.inputs[0]!.id)
    return ids
  }
  const stages = stageEqns.map((eqns, s) => {
    const defined = new Set(eqns.map((e) => e.out.id))
    const ins = new Map<number, Var>()
    for (const e of eqns) for (const v of e.inputs) if (!defined.has(v.id) && !ins.has(v.id)) ins.set(v.id, v)
    const later = readAfter(s)
    const outs = eqns.filter((e) => later.has(e.out.id)).map((e) => e.out)
    return { program: makeProgram([...ins.values()], eqns, outs) }
  })
  return { stages, rounds, axisIndex, inputs: program.inputs, outputs: program.outputs }
}
