import { TesseraError } from '../error.js'
import type { Prim } from '../prim.js'
import { collectivePrims } from '../prim-facts.js'
import type { Program } from '../program.js'

/**
 * What a backend, the reference evaluator or the lowering answers when a collective reaches it:
 * a collective's value comes from the other ranks, so computing it locally (as an identity, say)
 * would be silently wrong. Only `runCollective`, given a `Collective`, resolves one.
 */
export const collectiveError = (prim: Prim, where: string = prim): TesseraError =>
  new TesseraError(
    'input',
    where,
    `${prim} is a collective: its value comes from every rank, so no backend computes it alone; ` +
      'run the program with runCollective(backend, program, inputs, collective)',
  )

/** Throws `collectiveError` for the first collective equation of `program` (lowering entries call this). */
export function refuseCollectives(program: Program, where: string): void {
  const e = program.eqns.find((q) => collectivePrims.has(q.prim))
  if (e) throw collectiveError(e.prim, where)
}
