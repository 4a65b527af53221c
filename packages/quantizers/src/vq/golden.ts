import * as E from 'fp-ts/lib/Either.js'
import type { CaseRunner } from '../golden/runner.js'
import { loadCaseState, runEachCaseRun } from '../golden/runner.js'
import { decodeVQ } from './config.js'
import { makeVectorQuantize } from './vector-quantize.js'

/**
 * VectorQuantize cases: runs execute in order on one module, so the state a training run leaves
 * feeds the next run. Forward keyword arguments that are also constructor options
 * (`freeze_codebook`, `sample_codebook_temp`) go into that run's config.
 */
export const runVectorQuantizeCase: CaseRunner = async (c, ctx) => {
  const base = decodeVQ(c.kwargs)
  if (E.isLeft(base)) return base
  const loaded = loadCaseState(makeVectorQuantize(base.right), c.state)
  if (E.isLeft(loaded)) return loaded
  const runs = await runEachCaseRun(c, ctx, loaded.right, (run) => E.map(makeVectorQuantize)(decodeVQ({ ...c.kwargs, ...run.callKwargs })), (q, res, P) => ({
    quantized: res.quantized,
    indices: res.indices,
    loss: res.loss,
    commitment: res.losses['commitment']!,
    codebook_dist: res.extra!['codebook_dist']!,
    codebook_input: res.extra!['codebook_input']!,
    // the reference calls get_output_from_indices after the forward, on the updated module
    get_output_from_indices: q.indicesToCodes(P, res.indices, res.state),
  }), 'threaded')
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right })
}
