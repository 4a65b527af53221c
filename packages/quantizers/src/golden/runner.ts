import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, fmtShape, random, shapeEq } from '@tessera/core'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { CompileCache } from '../run.js'
import { runOnHost } from '../run.js'
import type { Check } from './compare.js'
import { compareTensor } from './compare.js'
import type { GoldenCase, GoldenRun, GoldenTensor } from './format.js'

export interface CaseContext {
  readonly backend: Backend
  readonly cache: CompileCache
}

/** What a class runner computed for one run: outputs under the case's own output names. */
export interface RunProduct {
  readonly outputs: Named<HostTensor>
  readonly stateAfter?: Named<HostTensor>
  /** Why the library cannot run this run ("not implemented: mask"); its outputs are then not checked. */
  readonly unsupported?: string
  /** Case outputs that record the reference's random draw, fed to the run (replayed) rather than computed. */
  readonly replayed?: readonly string[]
}

export interface CaseProduct {
  readonly runs: readonly RunProduct[]
  /** Buffers the port derives itself (not loaded), compared with the case's `state` by name. */
  readonly derived?: Named<HostTensor>
}

/** Runs one case of a class; a Left means the case could not be run at all (it fails). */
export type CaseRunner = (c: GoldenCase, ctx: CaseContext) => Promise<E.Either<TesseraError, CaseProduct>>

/** Class name -> runner: a plain value, built by whoever runs cases (see cases.ts). */
export type CaseRunners = Readonly<Record<string, CaseRunner>>

/**
 * `pass`: every output checked agrees; `fail`: an output disagrees or the case could not run;
 * `unsupported`: the class, or something a run needs, is not in the library (nothing disagrees).
 */
export type CaseStatus = 'pass' | 'fail' | 'unsupported'

export interface RunReport {
  readonly name: string
  readonly status: CaseStatus
  /** why the run is unsupported */
  readonly reason?: string
  readonly checks: readonly Check[]
  readonly replayed: readonly string[]
}

export interface CaseReport {
  readonly name: string
  readonly className: string
  readonly status: CaseStatus
  /** status === 'pass' */
  readonly ok: boolean
  /** every check: derived buffers first, then each run's */
  readonly checks: readonly Check[]
  readonly runs: readonly RunReport[]
  /** why the case could not run at all (a failure) */
  readonly error?: string
  /** why the whole case is unsupported (its class is not in the library) */
  readonly unsupported?: string
  readonly worstFloat: number
  readonly indexMismatches: number
}

const noRuns = (c: GoldenCase, status: CaseStatus, why: Partial<Pick<CaseReport, 'error' | 'unsupported'>>): CaseReport => ({
  name: c.name,
  className: c.className,
  status,
  ok: false,
  checks: [],
  runs: [],
  ...why,
  worstFloat: NaN,
  indexMismatches: NaN,
})

export async function runCase(c: GoldenCase, runners: CaseRunners, ctx: CaseContext): Promise<CaseReport> {
  const fail = (error: string): CaseReport => noRuns(c, 'fail', { error })
  const runner = Object.prototype.hasOwnProperty.call(runners, c.className) ? runners[c.className] : undefined
  if (!runner) return noRuns(c, 'unsupported', { unsupported: `class ${c.className} is not in the library` })
  let product: E.Either<TesseraError, CaseProduct>
  try {
    product = await runner(c, ctx)
  } catch (e) {
    return fail(`runner threw: ${(e as Error).message}`)
  }
  if (E.isLeft(product)) return fail(product.left.message)
  const p = product.right
  if (p.runs.length !== c.runs.length) return fail(`runner produced ${p.runs.length} runs, case has ${c.runs.length}`)
  const checks: Check[] = []
  for (const [name, mine] of Object.entries(p.derived ?? {})) {
    const want = c.state[name]
    if (want) checks.push(compareTensor(`state.${name}`, mine, want))
  }
  const runs = c.runs.map((run, i): RunReport => {
    const got = p.runs[i]!
    const replayed = got.replayed ?? []
    if (got.unsupported !== undefined) return { name: run.name, status: 'unsupported', reason: got.unsupported, checks: [], replayed }
    // every output the case records is checked, except a recorded random draw the run was given
    const mine: Check[] = []
    for (const [name, want] of Object.entries(run.outputs))
      if (!replayed.includes(name)) mine.push(compareTensor(`${run.name}.${name}`, got.outputs[name], want))
    for (const [name, want] of Object.entries(run.stateAfter ?? {}))
      mine.push(compareTensor(`${run.name}.state_after.${name}`, got.stateAfter?.[name], want))
    checks.push(...mine)
    return { name: run.name, status: mine.every((k) => k.ok) ? 'pass' : 'fail', checks: mine, replayed }
  })
  const floats = checks.filter((k) => k.kind === 'float')
  const status: CaseStatus = !checks.every((k) => k.ok) ? 'fail' : runs.some((r) => r.status === 'unsupported') ? 'unsupported' : 'pass'
  return {
    name: c.name,
    className: c.className,
    status,
    ok: status === 'pass',
    checks,
    runs,
    worstFloat: floats.reduce((m, k) => Math.max(m, k.worst), 0),
    indexMismatches: checks.filter((k) => k.kind === 'index').reduce((s, k) => s + k.mismatches, 0),
  }
}

/**
 * Parameters and buffers for a case: the quantizer's own init, overridden by every entry of the
 * case's state (shapes must match; integer buffers load as int32). A name the quantizer does not
 * have is an error, so a misnamed state dict cannot pass silently.
 */
export function loadCaseState(q: Quantizer, caseState: Readonly<Record<string, GoldenTensor>>, seed = 0): E.Either<TesseraError, Init & { derived: Named<HostTensor> }> {
  const init = q.init(random.keyFromSeed(seed))
  const params: Record<string, HostTensor> = { ...init.params }
  const state: Record<string, HostTensor> = { ...init.state }
  for (const [name, g] of Object.entries(caseState)) {
    const target = name in q.paramSpecs ? params : name in q.stateSpecs ? state : undefined
    const spec = q.paramSpecs[name] ?? q.stateSpecs[name]
    if (!target || !spec) return E.left(new TesseraError('input', `golden.state.${name}`, `${q.kind} has no parameter or buffer named ${name}`))
    if (!shapeEq(spec.shape, g.host.shape))
      return E.left(new TesseraError('input', `golden.state.${name}`, `shape ${fmtShape(g.host.shape)}; ${q.kind} expects ${fmtShape(spec.shape)}`))
    if (spec.dtype !== g.host.dtype) return E.left(new TesseraError('input', `golden.state.${name}`, `dtype ${g.host.dtype}; ${q.kind} expects ${spec.dtype}`))
    target[name] = g.host
  }
  return E.right({ params, state, derived: init.state })
}

/** The single input tensor `x` of a run. */
export function runInput(run: GoldenRun): E.Either<TesseraError, HostTensor> {
  const x = run.inputs['x']
  return x ? E.right(x.host) : E.left(new TesseraError('input', `golden.${run.name}`, 'run has no input "x"'))
}

/**
 * How a runner treats state across runs: `none` reports no state; `each` starts every run from the
 * loaded state and reports the state it leaves; `threaded` also feeds that state to the next run
 * (the reference runs them in order on one module).
 */
export type StateMode = 'none' | 'each' | 'threaded'

/** What the outputs of a run may use besides the result: the input, the options `apply` got, the run. */
export interface RunScope {
  readonly x: Tensor
  readonly opts: ApplyOptions & Record<string, unknown>
  readonly run: GoldenRun
}

/** A class's outputs for one run, under the case's output names. */
export type RunOutputs<Q extends Quantizer> = (q: Q, res: QuantizeResult, params: Named<Tensor>, state: Named<Tensor>, scope: RunScope) => Record<string, Tensor>

/**
 * Per-run additions to `apply`: tensors the run supplies (a recorded random draw) and the options
 * built from them inside the trace; `replayed` names the case outputs they came from.
 */
export interface RunCall {
  readonly tensors: Named<HostTensor>
  readonly options: (tensors: Named<Tensor>) => Record<string, unknown>
  readonly replayed: readonly string[]
}

export interface RunHooks {
  /** Inputs besides `x` this class takes; a run with any other input is unsupported ("not implemented: mask"). */
  readonly inputs?: readonly string[]
  /** Per-run additions to `apply`, or undefined for none. */
  readonly call?: (run: GoldenRun) => E.Either<TesseraError, RunCall | undefined>
}

/** Why the library cannot run `run`: the first input it does not take. */
export function unsupportedInput(run: GoldenRun, supported: readonly string[] = []): string | undefined {
  const extra = Object.keys(run.inputs).filter((k) => k !== 'x' && !supported.includes(k))
  return extra.length ? `not implemented: ${extra.join(', ')}` : undefined
}

/**
 * The loop every class runner shares: for each run, pick its quantizer, run `apply` on its input
 * from the loaded params and state, and collect `outputs` (and the state after, per `mode`). A run
 * the library cannot run is reported unsupported; the state after it is the case's `state_after`
 * where recorded, else unchanged (the format's rule: a run without `state_after` leaves the state).
 */
export async function runEachCaseRun<Q extends Quantizer>(
  c: GoldenCase,
  ctx: CaseContext,
  loaded: Init,
  quantizerFor: (run: GoldenRun) => E.Either<TesseraError, Q>,
  outputs: RunOutputs<Q>,
  mode: StateMode,
  hooks: RunHooks = {},
): Promise<E.Either<TesseraError, RunProduct[]>> {
  const params = loaded.params
  let state: Named<HostTensor> = loaded.state
  const runs: RunProduct[] = []
  for (const run of c.runs) {
    const unsupported = unsupportedInput(run, hooks.inputs)
    if (unsupported !== undefined) {
      runs.push({ outputs: {}, unsupported })
      if (mode === 'threaded' && run.stateAfter)
        state = { ...state, ...Object.fromEntries(Object.entries(run.stateAfter).map(([k, g]) => [k, g.host])) }
      continue
    }
    const q = quantizerFor(run)
    if (E.isLeft(q)) return q
    const x = runInput(run)
    if (E.isLeft(x)) return x
    const call = hooks.call ? hooks.call(run) : E.right(undefined)
    if (E.isLeft(call)) return call
    const extra = call.right
    const training = run.mode === 'train'
    const r = await runOnHost(
      ctx.backend,
      [params, state, x.right, extra?.tensors ?? {}] as const,
      (p, s, xs, t) => {
        const P = p as Named<Tensor>, S = s as Named<Tensor>
        const opts = { training, ...(extra ? extra.options(t as Named<Tensor>) : {}) }
        const res = q.right.apply(P, S, xs as Tensor, opts)
        const outs = outputs(q.right, res, P, S, { x: xs as Tensor, opts, run })
        return mode === 'none' ? { outputs: outs } : { outputs: outs, state: { ...res.state } }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    const after = mode === 'none' ? undefined : (r.right.state as Named<HostTensor>)
    if (mode === 'threaded') state = after!
    runs.push({ outputs: r.right.outputs as Named<HostTensor>, ...(after ? { stateAfter: after } : {}), ...(extra ? { replayed: extra.replayed } : {}) })
  }
  return E.right(runs)
}
