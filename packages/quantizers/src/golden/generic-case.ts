import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor, TesseraError } from '@tessera/core'
import type { Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { GoldenRun } from './format.js'
import type { CaseRunner, RunHooks, RunOutputs, StateMode } from './runner.js'
import { loadCaseState, runEachCaseRun } from './runner.js'

/** Forward kwargs that only choose what the reference returns; every other call kwarg must be a config option. */
const RETURN_SELECTORS = new Set(['return_all_codes', 'return_loss_breakdown'])

/** A run's call kwargs that configure the quantizer (forward options such as `freeze_codebook` are config options here). */
export function configKwargs(run: GoldenRun): Record<string, unknown> {
  return Object.fromEntries(Object.entries(run.callKwargs).filter(([k]) => !RETURN_SELECTORS.has(k)))
}

/** Tessera's names for intermediates that the cases name otherwise. */
const CASE_NAMES: Readonly<Record<string, string>> = {
  projected: 'project_in_output',
  codes: 'codes_before_project_out',
}

/**
 * The cases' name for one of Tessera's outputs: `projected` is `project_in_output`, `codes` is
 * `codes_before_project_out`, and group g's `rvqs.{g}.{name}` is `group{g}_{name}`, so an output
 * the case records under another name is compared, not dropped.
 */
export function caseName(name: string): string {
  const group = /^rvqs\.(\d+)\.(.+)$/.exec(name)
  if (group) return `group${group[1]}_${caseName(group[2]!)}`
  return CASE_NAMES[name] ?? name
}

/** A record of outputs under the cases' names. */
export const withCaseNames = (rec: Named<Tensor> | undefined): Record<string, Tensor> =>
  Object.fromEntries(Object.entries(rec ?? {}).map(([k, v]) => [caseName(k), v]))

/**
 * Buffers a quantizer derives from its config alone (FSQ's levels, basis and implicit codebook,
 * LFQ's bit mask and codebook, ResidualFSQ's scales and soft clamp), at any prefix. Only these are
 * compared with a case's state; every other buffer (a random rotation, a codebook) is loaded.
 */
export const CONFIG_BUFFERS = ['_levels', '_basis', 'implicit_codebook', 'mask', 'codebook', 'scales', 'soft_clamp_input_value'] as const

/** The entries of `state` named one of `names`, directly or after a prefix (`rvqs.0.layers.1.`). */
export function derivedBuffers(state: Named<HostTensor>, names: readonly string[]): Record<string, HostTensor> {
  return Object.fromEntries(Object.entries(state).filter(([k]) => names.some((n) => k === n || k.endsWith(`.${n}`))))
}

type WithCodes = Quantizer & { codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor }

/** The outputs any quantizer can give under the reference's usual output names. */
export function standardOutputs(q: Quantizer, res: QuantizeResult, P: Named<Tensor>, S: Named<Tensor>): Record<string, Tensor> {
  const fromIdx = q.indicesToCodes(P, res.indices, S)
  const out: Record<string, Tensor> = {
    ...withCaseNames(res.extra),
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

export interface GenericRunnerOptions<Q extends Quantizer> {
  /** Buffer names (at any prefix) the port derives itself; compared with the case's state. */
  readonly derived?: readonly string[]
  /** Outputs of this class beyond `standardOutputs` (they win on a name clash). */
  readonly outputs?: RunOutputs<Q>
  readonly mode?: StateMode
  readonly hooks?: RunHooks
}

/**
 * A runner for a quantizer class: decode kwargs (merged with each run's call kwargs), load the
 * case's state, run every run and report `standardOutputs` plus the class's own.
 */
export function quantizerCaseRunner<Q extends Quantizer>(build: (options: Record<string, unknown>) => E.Either<TesseraError, Q>, options: GenericRunnerOptions<Q> = {}): CaseRunner {
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
        const extraKw = configKwargs(run)
        return Object.keys(extraKw).length ? build({ ...c.kwargs, ...extraKw }) : base
      },
      (q, res, P, S, scope) => ({ ...standardOutputs(q, res, P, S), ...(options.outputs ? options.outputs(q, res, P, S, scope) : {}) }),
      options.mode ?? 'each',
      options.hooks,
    )
    if (E.isLeft(runs)) return runs
    return E.right({ runs: runs.right, derived: derivedBuffers(loaded.right.derived, options.derived ?? []) })
  }
}
