import { quantizerCaseRunner } from '../golden/generic-case.js'
import { simVQ } from './simvq.js'

/**
 * SimVQ cases: the usual outputs plus the reference's names for its own: `commit_loss` (the
 * weighted commitment loss, computed in eval too) and `codebook`, the implicit codebook
 * `code_transform(frozen_codebook)`.
 */
export const runSimVQCase = quantizerCaseRunner(simVQ, {
  outputs: (q, res, P, S) => ({ commit_loss: res.loss, codebook: q.codebook(P, S) }),
})
