import * as E from 'fp-ts/lib/Either.js'
import { makeFSQ } from '../fsq/fsq.js'
import { decodeFSQ } from '../fsq/config.js'
import { CONFIG_BUFFERS, derivedBuffers } from './generic-case.js'
import type { CaseRunner } from './runner.js'
import { loadCaseState, runEachCaseRun } from './runner.js'

/**
 * FSQ cases: forward outputs, indices_to_codes, level indices, codes_to_indices, implicit codebook.
 * `orthogonal_rot` is a random buffer: loaded from the case like any buffer, never compared with a draw of ours.
 */
export const runFSQCase: CaseRunner = async (c, ctx) => {
  const cfg = decodeFSQ(c.kwargs)
  if (E.isLeft(cfg)) return cfg
  const q = makeFSQ(cfg.right)
  const loaded = loadCaseState(q, c.state)
  if (E.isLeft(loaded)) return loaded
  const runs = await runEachCaseRun(c, ctx, loaded.right, () => E.right(q), (q, res, P, S) => {
    const codes = res.extra!['codes']!
    const [b, n] = codes.shape as [number, number]
    return {
      quantized: res.quantized,
      indices: res.indices,
      indices_to_codes: q.indicesToCodes(P, res.indices, S),
      indices_to_level_indices: q.indicesToLevelIndices(res.indices),
      codes_before_project_out: codes,
      'codes_to_indices(codes_before_project_out)': q.codesToIndices(codes.reshape([b, n, cfg.right.num_codebooks, cfg.right.codebook_dim])),
      project_in_output: res.extra!['projected']!,
    }
  }, 'none')
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right, derived: derivedBuffers(loaded.right.derived, CONFIG_BUFFERS) })
}
