import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import type { CaseRunner } from '../golden/runner.js'
import { loadCaseState, runEachCaseRun } from '../golden/runner.js'
import type { Named } from '../quantizer.js'
import { runOnHost } from '../run.js'
import { decodeRVQ } from './config.js'
import { makeResidualVQ } from './residual-vq.js'

/**
 * ResidualVQ cases. The case's `codebooks` entry is the reference's derived stacked view, not a
 * buffer: it is checked against ours instead of loaded. Forward keyword arguments that are layer
 * options (`freeze_codebook`) go into that run's config.
 */
export const runResidualVQCase: CaseRunner = async (c, ctx) => {
  const base = decodeRVQ(c.kwargs)
  if (E.isLeft(base)) return base
  const q0 = makeResidualVQ(base.right)
  const { codebooks: _derivedView, ...caseState } = c.state
  const loaded = loadCaseState(q0, caseState)
  if (E.isLeft(loaded)) return loaded
  const { params, state } = loaded.right
  const derived = await runOnHost(ctx.backend, [params, state] as const, (p, s) => q0.codebooks(p as Named<Tensor>, s as Named<Tensor>), ctx.cache)
  if (E.isLeft(derived)) return derived
  const runs = await runEachCaseRun(c, ctx, loaded.right, (run) => E.map(makeResidualVQ)(decodeRVQ({ ...c.kwargs, ...run.callKwargs })), (q, res, P) => ({
    quantized: res.quantized,
    indices: res.indices,
    losses: res.extra!['all_losses']!,
    all_codes: q.codesFromIndices(P, res.indices, res.state),
    get_output_from_indices: q.indicesToCodes(P, res.indices, res.state),
  }), 'threaded')
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right, derived: { codebooks: derived.right as HostTensor } })
}
