import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import type { CaseRunner, RunProduct } from '../golden/runner.js'
import { loadCaseState, runInput } from '../golden/runner.js'
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
  const params = loaded.right.params
  let state: Named<HostTensor> = loaded.right.state
  const derived = await runOnHost(ctx.backend, [params, state] as const, (p, s) => q0.codebooks(p as Named<Tensor>, s as Named<Tensor>), ctx.cache)
  if (E.isLeft(derived)) return derived
  const runs: RunProduct[] = []
  for (const run of c.runs) {
    const cfg = decodeRVQ({ ...c.kwargs, ...run.callKwargs })
    if (E.isLeft(cfg)) return cfg
    const q = makeResidualVQ(cfg.right)
    const x = runInput(run)
    if (E.isLeft(x)) return x
    const r = await runOnHost(
      ctx.backend,
      [params, state, x.right] as const,
      (p, s, xs) => {
        const P = p as Named<Tensor>, S = s as Named<Tensor>
        const res = q.apply(P, S, xs as Tensor, { training: run.mode === 'train' })
        return {
          outputs: {
            quantized: res.quantized,
            indices: res.indices,
            losses: res.extra!['all_losses']!,
            all_codes: q.codesFromIndices(P, res.indices, res.state),
            get_output_from_indices: q.indicesToCodes(P, res.indices, res.state),
          },
          state: { ...res.state },
        }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    state = r.right.state as Named<HostTensor>
    runs.push({ outputs: r.right.outputs as Named<HostTensor>, stateAfter: state })
  }
  return E.right({ runs, derived: { codebooks: derived.right as HostTensor } })
}
