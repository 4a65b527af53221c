import type { Eqn, EqnOf, Var } from '../../program.js'
import type { ExpMapPattern } from './exp-map.js'
import type { NearestPattern } from './nearest.js'

/**
 * One step of a loop schedule. Every step computes stored values only; a value that is not
 * stored is recomputed inline by each loop that reads it (its fused expression).
 * - `loop`: one loop over the elements of `out`, evaluating its fused expression;
 * - `reduce`: a reduction whose operand's fused expression runs inside the reduction loop, also
 *   writing `sides` (stored values of the operand's shape computed in the same pass);
 * - `matmul`: a matrix product read from buffers;
 * - `nearest`: distances and their argmin in one pass, the distance matrix never stored;
 * - `expMap`: a large float32 exp as a map over its stored base, its argument's prologue fused;
 * - `host`: data movement or a random draw, evaluated by the reference evaluator.
 */
export type LoopStep =
  | { readonly kind: 'loop'; readonly out: Var }
  | { readonly kind: 'reduce'; readonly eqn: Eqn; readonly sides: readonly Var[] }
  | { readonly kind: 'matmul'; readonly eqn: EqnOf<'matmul'> }
  | { readonly kind: 'nearest'; readonly pattern: NearestPattern }
  | { readonly kind: 'expMap'; readonly out: Var; readonly pattern: ExpMapPattern }
  | { readonly kind: 'host'; readonly eqn: Eqn }

/** A step of a row chain: a sink sums over the leading axis into accumulators carried across blocks. */
export interface ChainStep {
  readonly step: LoopStep
  readonly sink: boolean
}

/**
 * Steps that share a leading (row) axis of size `n`, run block by block: every step of the
 * chain on rows [lo, lo + rows) before the next block, so intermediates used only inside the
 * chain (`local`) live in block-sized buffers that stay in cache. Sums over the leading axis are
 * sinks: float64 accumulators carried across blocks and stored at the end. Every output element
 * is computed by the same operations in the same order as unblocked, so results are
 * bit-identical. `workers` extra threads may share the blocks.
 */
export interface RowChain {
  readonly kind: 'rows'
  readonly n: number
  readonly rows: number
  readonly steps: readonly ChainStep[]
  /** Values written by the chain that live only inside it (one block at a time). */
  readonly local: readonly Var[]
  /** Values the chain writes whole (outputs, values read after it); sinks excluded. */
  readonly full: readonly Var[]
  /** Whole values read or written row by row (`full` plus the row-wise inputs). */
  readonly views: readonly Var[]
  /** Values read whole by some step (a matmul's right operand, broadcast rows). */
  readonly wholeReads: readonly Var[]
  /** Worker threads worth sharing the blocks with (the calling thread not counted). */
  readonly workers: number
}

export type ScheduleStep = LoopStep | RowChain

/** Stored values a step writes. */
export function writesOf(st: LoopStep): Var[] {
  switch (st.kind) {
    case 'loop': case 'expMap': return [st.out]
    case 'reduce': return [st.eqn.out, ...st.sides]
    case 'matmul': case 'host': return [st.eqn.out]
    case 'nearest': return [st.pattern.select.out]
  }
}
