import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import type { Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { CaseRunner } from './runner.js'
import { loadCaseState, runEachCaseRun } from './runner.js'

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
    const runs = await runEachCaseRun(
      c,
      ctx,
      loaded.right,
      (run) => {
        const extraKw = Object.fromEntries(Object.entries(run.callKwargs).filter(([k]) => !RETURN_SELECTORS.has(k)))
        return Object.keys(extraKw).length ? build({ ...c.kwargs, ...extraKw }) : base
      },
      standardOutputs,
      'each',
    )
    if (E.isLeft(runs)) return runs
    const d: Record<string, HostTensor> = {}
    for (const name of derived) {
      const v = loaded.right.derived[name]
      if (!v) return E.left(new TesseraError('input', `golden.${c.name}`, `no derived buffer ${name}`))
      d[name] = v
    }
    return E.right({ runs: runs.right, derived: d })
  }
}
