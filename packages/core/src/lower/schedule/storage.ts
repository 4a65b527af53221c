import type { Prim } from '../../prim.js'
import { costlyPrims, primKind } from '../../prim.js'
import type { Var } from '../../program.js'
import type { ProgramGraph } from './graph.js'
import { isElementwise, isRemap, sizeOfVar } from './graph.js'

/** Primitives whose result is always stored: each is a loop (or a host step) of its own. */
export const ownLoop = (p: Prim): boolean => !isElementwise(p) && !isRemap(p) && p !== 'iota' && p !== 'full'

/** Own-loop primitives that read their operands from buffers (no fused prologue). */
export const readsBuffers = (p: Prim): boolean =>
  ownLoop(p) && primKind[p] !== 'reduce' && primKind[p] !== 'argreduce' && p !== 'constant'

export const isReduction = (p: Prim): boolean => primKind[p] === 'reduce' || primKind[p] === 'argreduce'


/**
 * Which values are stored (materialized in a buffer) and which are recomputed inline by each
 * loop that reads them, decided in program order (a value's operands are decided first).
 */
export function decideStorage(g: ProgramGraph): Set<number> {
  const { program } = g
  const stored = new Set<number>()
  const cheapMemo = new Map<number, boolean>()
  const cheap = (v: Var): boolean => {
    const c = cheapMemo.get(v.id)
    if (c !== undefined) return c
    const e = g.def(v)
    const r = !e || stored.has(v.id) || e.prim === 'full' || e.prim === 'iota' || (isRemap(e.prim) && cheap(e.inputs[0]!))
    cheapMemo.set(v.id, r)
    return r
  }
  const leadingSum = (u: (typeof program.eqns)[number]) => u.prim === 'reduce_sum' && u.params.axes.includes(0)
  for (const v of program.inputs) stored.add(v.id)
  for (const e of program.eqns) {
    const v = e.out
    const us = g.uses(v)
    const mustStore =
      g.isOutput(v) ||
      ownLoop(e.prim) ||
      us.some((u) => readsBuffers(u.prim)) ||
      // an expensive value read through an expanding broadcast would be recomputed per copy
      (!cheap(v) && us.some((u) => u.prim === 'broadcast' && sizeOfVar(u.out) > sizeOfVar(v))) ||
      // a costly value read by several loops would be recomputed by each (softmax's exp)
      (costlyPrims.has(e.prim) && us.length > 1) ||
      // a computed value also summed over its leading axis (softmax probabilities and their mean
      // over samples): stored, it becomes a side output of the loop that computes it, and the
      // column sum (a row chain's sink, run one block at a time in row order) only adds instead
      // of recomputing it
      (!cheap(v) && v.aval.shape.length >= 2 && us.length > 1 && us.some(leadingSum))
    if (mustStore) stored.add(v.id)
  }
  return stored
}
