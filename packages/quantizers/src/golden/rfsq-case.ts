import * as E from 'fp-ts/lib/Either.js'
import { decodeResidualFSQ, makeResidualFSQ } from '../residual/residual-fsq.js'
import { CONFIG_BUFFERS, derivedBuffers, withCaseNames } from './generic-case.js'
import type { CaseRunner } from './runner.js'
import { loadCaseState, runEachCaseRun } from './runner.js'

/** ResidualFSQ cases: output, indices, all codes, output from indices, per-layer inputs and outputs. */
export const runResidualFSQCase: CaseRunner = async (c, ctx) => {
  const cfg = decodeResidualFSQ(c.kwargs)
  if (E.isLeft(cfg)) return cfg
  const q = makeResidualFSQ(cfg.right)
  const loaded = loadCaseState(q, c.state)
  if (E.isLeft(loaded)) return loaded
  const runs = await runEachCaseRun(c, ctx, loaded.right, () => E.right(q), (q, res, P, S) => ({
    ...withCaseNames(res.extra),
    quantized: res.quantized,
    indices: res.indices,
    all_codes: q.codesFromIndices(P, res.indices, S),
    get_output_from_indices: q.indicesToCodes(P, res.indices, S),
  }), 'none')
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right, derived: derivedBuffers(loaded.right.derived, CONFIG_BUFFERS) })
}
