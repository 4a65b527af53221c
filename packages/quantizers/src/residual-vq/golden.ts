import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { scoped, stack } from '@tessera/core'
import { configKwargs, withCaseNames } from '../golden/generic-case.js'
import type { GoldenRun } from '../golden/format.js'
import type { CaseRunner, RunHooks } from '../golden/runner.js'
import { loadCaseState, runEachCaseRun } from '../golden/runner.js'
import { groupPrefix } from '../grouped/grouped.js'
import type { Named, QuantizeResult } from '../quantizer.js'
import { runOnHost } from '../run.js'
import { decodeRVQ } from './config.js'
import type { GroupedResidualVQ } from './grouped-residual-vq.js'
import { decodeGroupedResidualVQ, makeGroupedResidualVQ } from './grouped-residual-vq.js'
import type { ResidualVQ } from './residual-vq.js'
import { makeResidualVQ } from './residual-vq.js'

/** The outputs a (grouped) ResidualVQ case records, named as the case names them; `codebooks` is the derived stacked view. */
function residualOutputs(q: ResidualVQ | GroupedResidualVQ, res: QuantizeResult, P: Named<Tensor>, codebooks: Tensor): Record<string, Tensor> {
  return {
    ...withCaseNames(res.extra),
    quantized: res.quantized,
    indices: res.indices,
    losses: res.extra!['all_losses']!,
    all_codes: q.codesFromIndices(P, res.indices, res.state),
    get_output_from_indices: q.indicesToCodes(P, res.indices, res.state),
    codebooks,
  }
}

/** A run's `freeze_codebook` is a forward argument of ResidualVQ (it overrides the layers' own), so it goes to the call. */
const freeze = (run: GoldenRun): boolean | undefined => configKwargs(run)['freeze_codebook'] as boolean | undefined

/** A run's other keyword arguments, which go into its config. */
function rest(run: GoldenRun): Record<string, unknown> {
  const { freeze_codebook: _f, ...kw } = configKwargs(run)
  return kw
}
const freezeHooks: RunHooks = {
  call: (run) => {
    const f = freeze(run)
    return E.right(f === undefined ? undefined : { tensors: {}, options: () => ({ freezeCodebook: f }), replayed: [] })
  },
}

/**
 * ResidualVQ cases. The case's `codebooks` entry is the reference's derived stacked view, not a
 * buffer: it is checked against ours instead of loaded. Other forward keyword arguments go into
 * that run's config.
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
  const runs = await runEachCaseRun(c, ctx, loaded.right, (run) => E.map(makeResidualVQ)(decodeRVQ({ ...c.kwargs, ...rest(run) })), (q, res, P) =>
    residualOutputs(q, res, P, q.codebooks(P, res.state)), 'threaded', freezeHooks)
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right, derived: { codebooks: derived.right as HostTensor } })
}

/** Group g's ResidualVQ: the grouped combinator builds every group with makeResidualVQ. */
const groupRVQs = (q: GroupedResidualVQ) => q.spec.groups as readonly ResidualVQ[]

/**
 * GroupedResidualVQ cases: indices (g, b, n, q), per-group losses (g, q), all codes (g, q, b, n, d),
 * and the reference's derived `codebooks`, every group's stacked view stacked again (g, q, K, d).
 */
export const runGroupedResidualVQCase: CaseRunner = async (c, ctx) => {
  const base = decodeGroupedResidualVQ(c.kwargs)
  if (E.isLeft(base)) return base
  const loaded = loadCaseState(makeGroupedResidualVQ(base.right), c.state)
  if (E.isLeft(loaded)) return loaded
  const build = (run: GoldenRun) => E.map(makeGroupedResidualVQ)(decodeGroupedResidualVQ({ ...c.kwargs, ...rest(run) }))
  const runs = await runEachCaseRun(c, ctx, loaded.right, build, (q, res, P) =>
    residualOutputs(q, res, P, stack(groupRVQs(q).map((rvq, g) => rvq.codebooks(scoped(P, groupPrefix(g)), scoped(res.state, groupPrefix(g)))), 0)), 'threaded', freezeHooks)
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right })
}
