import * as E from 'fp-ts/lib/Either.js'
import { decodeLFQ } from '../lfq/config.js'
import { makeLFQ } from '../lfq/lfq.js'
import { CONFIG_BUFFERS, configKwargs, derivedBuffers } from './generic-case.js'
import type { CaseRunner } from './runner.js'
import { loadCaseState, runEachCaseRun } from './runner.js'

/** LFQ cases: forward in eval and train (forward kwargs such as inv_temperature go into the config). */
export const runLFQCase: CaseRunner = async (c, ctx) => {
  const base = decodeLFQ(c.kwargs)
  if (E.isLeft(base)) return base
  const loaded = loadCaseState(makeLFQ(base.right), c.state)
  if (E.isLeft(loaded)) return loaded
  const runs = await runEachCaseRun(c, ctx, loaded.right, (run) => E.map(makeLFQ)(decodeLFQ({ ...c.kwargs, ...configKwargs(run) })), (q, res, P, S) => ({
    quantized: res.quantized,
    indices: res.indices,
    aux_loss: res.loss,
    per_sample_entropy: res.losses['per_sample_entropy']!,
    batch_entropy: res.losses['batch_entropy']!,
    commitment: res.losses['commitment']!,
    indices_to_codes: q.indicesToCodes(P, res.indices, S),
    codes_before_project_out: res.extra!['codes']!,
    project_in_output: res.extra!['projected']!,
  }), 'none')
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right, derived: derivedBuffers(loaded.right.derived, CONFIG_BUFFERS) })
}
