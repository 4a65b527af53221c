import { collectiveError } from '../distributed/refuse.js'
import type { ImplTable } from './impl.js'

/**
 * Collectives in the reference evaluator: refused by name. A program with collectives runs
 * through `runCollective`, which evaluates the stages between them and resolves each collective
 * with a `Collective`; the reference never sees one.
 */
export const collectiveImpls: Pick<ImplTable, 'all_reduce' | 'axis_index'> = {
  all_reduce: () => {
    throw collectiveError('all_reduce')
  },
  axis_index: () => {
    throw collectiveError('axis_index')
  },
}
