import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, fmtShape, random, shapeEq } from '@tessera/core'
import type { Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
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

export interface CaseReport {
  readonly name: string
  readonly className: string
  readonly ok: boolean
  readonly checks: readonly Check[]
  readonly error?: string
  readonly worstFloat: number
  readonly indexMismatches: number
}

export async function runCase(c: GoldenCase, runners: CaseRunners, ctx: CaseContext): Promise<CaseReport> {
  const fail = (error: string): CaseReport => ({ name: c.name, className: c.className, ok: false, checks: [], error, worstFloat: NaN, indexMismatches: NaN })
  const runner = Object.prototype.hasOwnProperty.call(runners, c.className) ? runners[c.className] : undefined
  if (!runner) return fail(`no runner for class ${c.className} (the library lacks it)`)
  let product: E.Either<TesseraError, CaseProduct>
  try {
    product = await runner(c, ctx)
  } catch (e) {
    return fail(`runner threw: ${(e as Error).message}`)
  }
  if (E.isLeft(product)) return fail(product.left.message)
  const p = product.right
  const checks: Check[] = []
  if (p.runs.length !== c.runs.length) return fail(`runner produced ${p.runs.length} runs, case has ${c.runs.length}`)
  for (const [name, mine] of Object.entries(p.derived ?? {})) {
    const want = c.state[name]
    if (want) checks.push(compareTensor(`state.${name}`, mine, want))
  }
  c.runs.forEach((run, i) => {
    const got = p.runs[i]!
    for (const [name, want] of Object.entries(run.outputs)) checks.push(compareTensor(`${run.name}.${name}`, got.outputs[name], want))
    for (const [name, want] of Object.entries(run.stateAfter ?? {}))
      checks.push(compareTensor(`${run.name}.state_after.${name}`, got.stateAfter?.[name], want))
  })
  const floats = checks.filter((k) => k.kind === 'float')
  return {
    name: c.name,
    className: c.className,
    ok: checks.every((k) => k.ok),
    checks,
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

/** A class's outputs for one run, under the case's output names. */
export type RunOutputs<Q extends Quantizer> = (q: Q, res: QuantizeResult, params: Named<Tensor>, state: Named<Tensor>) => Record<string, Tensor>

/**
 * The loop every class runner shares: for each run, pick its quantizer, run `apply` on its input
 * from the loaded params and state, and collect `outputs` (and the state after, per `mode`).
 */
export async function runEachCaseRun<Q extends Quantizer>(
  c: GoldenCase,
  ctx: CaseContext,
  loaded: Init,
  quantizerFor: (run: GoldenRun) => E.Either<TesseraError, Q>,
  outputs: RunOutputs<Q>,
  mode: StateMode,
): Promise<E.Either<TesseraError, RunProduct[]>> {
  const params = loaded.params
  let state: Named<HostTensor> = loaded.state
  const runs: RunProduct[] = []
  for (const run of c.runs) {
    const q = quantizerFor(run)
    if (E.isLeft(q)) return q
    const x = runInput(run)
    if (E.isLeft(x)) return x
    const training = run.mode === 'train'
    if (mode === 'none') {
      const r = await runOnHost(
        ctx.backend,
        [params, state, x.right] as const,
        (p, s, xs) => {
          const P = p as Named<Tensor>, S = s as Named<Tensor>
          return outputs(q.right, q.right.apply(P, S, xs as Tensor, { training }), P, S)
        },
        ctx.cache,
      )
      if (E.isLeft(r)) return r
      runs.push({ outputs: r.right as Named<HostTensor> })
      continue
    }
    const r = await runOnHost(
      ctx.backend,
      [params, state, x.right] as const,
      (p, s, xs) => {
        const P = p as Named<Tensor>, S = s as Named<Tensor>
        const res = q.right.apply(P, S, xs as Tensor, { training })
        return { outputs: outputs(q.right, res, P, S), state: { ...res.state } }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    const after = r.right.state as Named<HostTensor>
    if (mode === 'threaded') state = after
    runs.push({ outputs: r.right.outputs as Named<HostTensor>, stateAfter: after })
  }
  return E.right(runs)
}
