import { quantizerCaseRunner } from '../golden/generic-case.js'
import { hierarchicalVQ } from './hierarchical-vq.js'

/**
 * HierarchicalVQ cases: `reconstruction`, the per-scale `indices.{i}` and intermediates
 * `scale{i}_*` (Tessera's extra outputs carry the cases' names), `mean_commit_loss` and
 * `get_output_from_indices` on the per-scale index maps.
 */
export const runHierarchicalVQCase = quantizerCaseRunner(hierarchicalVQ, {
  outputs: (q, res, P, S) => ({
    reconstruction: res.quantized,
    mean_commit_loss: res.loss,
    get_output_from_indices: q.outputFromIndices(P, q.splitIndices(res.indices), res.state),
  }),
})
