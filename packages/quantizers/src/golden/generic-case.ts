import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import type { Named, QuantizeResult, Quantizer } from '../quantizer.js'
import { runOnHost } from '../run.js'
import type { CaseRunner, RunProduct } from './runner.js'
import { loadCaseState, runInput } from './runner.js'

/** Forward kwargs that only choose what the reference returns; every other call kwarg must be a config option. */
const RETURN_SELECTORS = new Set(['return_all_codes', 'return_loss_breakdown'])

type WithCodes = Quantizer & { codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor }

/** The outputs any quantizer can give under the reference's usual output names. */
export function standardOutputs(q: Quantizer, res: QuantizeResult, P: Named<Tensor>, S: Named<Tensor>): Record<string, Tensor> {
  const fromIdx = q.indicesToCodes(P, res.indices, S)
  const out: Record<string, Tensor> = {
    ...res.extra,
    ...res.losses,
    quantized: res.quantized,
    indices: res.indices,
    loss: res.extra?.['all_losses'] ?? res.loss,
    aux_loss: res.loss,
    losses: res.extra?.['all_losses'] ?? res.loss,
    indices_to_codes: fromIdx,
    get_output_from_indices: fromIdx,
  }
  if (typeof (q as Partial<WithCodes>).codesFromIndices === 'function') out['all_codes'] = (q as WithCodes).codesFromIndices(P, res.indices, S)
  return out
}

/**
 * A runner for a quantizer class: decode kwargs (merged with each run's call kwargs), load the
 * case's state, run every run and report `standardOutputs`; `derived` names buffers the port
 * computes itself, compared with the case's state.
 */
export function quantizerCaseRunner(build: (options: Record<string, unknown>) => E.Either<TesseraError, Quantizer>, derived: readonly string[] = []): CaseRunner {
  return async (c, ctx) => {
    const base = build({ ...c.kwargs })
    if (E.isLeft(base)) return base
    const loaded = loadCaseState(base.right, c.state)
    if (E.isLeft(loaded)) return loaded
    const { params, state } = loaded.right
    const runs: RunProduct[] = []
    for (const run of c.runs) {
      const extraKw = Object.fromEntries(Object.entries(run.callKwargs).filter(([k]) => !RETURN_SELECTORS.has(k)))
      const q = Object.keys(extraKw).length ? build({ ...c.kwargs, ...extraKw }) : base
      if (E.isLeft(q)) return q
      const x = runInput(run)
      if (E.isLeft(x)) return x
      const r = await runOnHost(
        ctx.backend,
        [params, state, x.right] as const,
        (p, s, xs) => {
          const P = p as Named<Tensor>, S = s as Named<Tensor>
          const res = q.right.apply(P, S, xs as Tensor, { training: run.mode === 'train' })
          return { outputs: standardOutputs(q.right, res, P, S), state: { ...res.state } }
        },
        ctx.cache,
      )
      if (E.isLeft(r)) return r
      runs.push({ outputs: r.right.outputs as Named<HostTensor>, stateAfter: r.right.state as Named<HostTensor> })
    }
    const d: Record<string, HostTensor> = {}
    for (const name of derived) {
      const v = loaded.right.derived[name]
      if (!v) return E.left(new TesseraError('input', `golden.${c.name}`, `no derived buffer ${name}`))
      d[name] = v
    }
    return E.right({ runs, derived: d })
  }
}
