import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import { configKwargs } from '../golden/generic-case.js'
import type { GoldenRun } from '../golden/format.js'
import type { CaseRunner, RunCall, RunOutputs } from '../golden/runner.js'
import { loadCaseState, runEachCaseRun } from '../golden/runner.js'
import type { Named } from '../quantizer.js'
import { decodeVQ } from './config.js'
import type { VectorQuantize } from './vector-quantize.js'
import { makeVectorQuantize } from './vector-quantize.js'

/** The output under which a case records the reference's dead-code draw: the batch rows its expired codes got. */
export const REPLACEMENT_ROWS = 'replacement_source_row'
/** The prefix of a case's outputs that record the state after the EMA step, before dead codes expire. */
export const BEFORE_EXPIRY = 'state_after_ema_before_expiry.'

/**
 * A recorded dead-code draw, (M) or (num_codebooks, M) row numbers, as the rows VectorQuantize's
 * `replacementRows` replays, so a training step with expiry needs no key and is checked exactly.
 */
export function replayDeadCodeDraw(run: GoldenRun, numCodebooks: number): E.Either<TesseraError, RunCall | undefined> {
  const rec = run.outputs[REPLACEMENT_ROWS]
  if (!rec) return E.right(undefined)
  const shape = rec.host.shape
  const m = shape[shape.length - 1]!
  if (!((shape.length === 1 && numCodebooks === 1) || (shape.length === 2 && shape[0] === numCodebooks)))
    return E.left(new TesseraError('input', `golden.${run.name}.${REPLACEMENT_ROWS}`, `expected (${numCodebooks}, M) row numbers, got [${shape.join(',')}]`))
  const rows = { ...rec.host, shape: [numCodebooks, m] }
  return E.right({ tensors: { rows }, options: (t: Named<Tensor>) => ({ replacementRows: t['rows']! }), replayed: [REPLACEMENT_ROWS] })
}

/** VectorQuantize's outputs under the cases' names; the reference calls get_output_from_indices after the forward, on the updated module. */
export const vqOutputs: RunOutputs<VectorQuantize> = (q, res, P, S, { x, opts, run }) => {
  const out: Record<string, Tensor> = {
    quantized: res.quantized,
    indices: res.indices,
    loss: res.loss,
    // the loss terms a call returns (with target indices: cross_entropy alone, as `loss`)
    ...res.losses,
    codebook_dist: res.extra!['codebook_dist']!,
    codebook_input: res.extra!['codebook_input']!,
    project_in_output: res.extra!['projected']!,
  }
  // only where recorded: a masked run's indices hold -1, which has no code
  if ('get_output_from_indices' in run.outputs) out['get_output_from_indices'] = q.indicesToCodes(P, res.indices, res.state)
  if (Object.keys(run.outputs).some((k) => k.startsWith(BEFORE_EXPIRY))) {
    // the EMA step alone is the same call with expiry off: the state the reference had before expiring codes
    const ema = makeVectorQuantize({ ...q.config, threshold_ema_dead_code: 0 }).apply(P, S, x, opts)
    for (const [k, v] of Object.entries(ema.state)) out[`${BEFORE_EXPIRY}${k}`] = v
  }
  return out
}

/** Forward inputs a case may give besides `x`, fed to `apply` under VectorQuantize's option names. */
const FORWARD_INPUTS: Readonly<Record<string, string>> = { mask: 'mask', lens: 'lens', indices: 'indices' }

/** The run's forward inputs (`mask`, ...) and its recorded dead-code draw, as one call. */
export function vqRunCall(run: GoldenRun, numCodebooks: number): E.Either<TesseraError, RunCall | undefined> {
  const draw = replayDeadCodeDraw(run, numCodebooks)
  if (E.isLeft(draw)) return draw
  const given = Object.keys(run.inputs).filter((k) => k in FORWARD_INPUTS)
  if (given.length === 0) return draw
  const tensors = { ...(draw.right?.tensors ?? {}), ...Object.fromEntries(given.map((k) => [`input.${k}`, run.inputs[k]!.host])) }
  return E.right({
    tensors,
    options: (t: Named<Tensor>) => ({ ...(draw.right ? draw.right.options(t) : {}), ...Object.fromEntries(given.map((k) => [FORWARD_INPUTS[k]!, t[`input.${k}`]!])) }),
    replayed: draw.right?.replayed ?? [],
  })
}

/**
 * VectorQuantize cases: runs execute in order on one module, so the state a training run leaves
 * feeds the next run. Forward keyword arguments that are also constructor options
 * (`freeze_codebook`, `sample_codebook_temp`) go into that run's config; a recorded dead-code draw
 * is replayed; forward inputs (`mask`, `lens`, `indices`) are passed as the options of those names.
 */
export const runVectorQuantizeCase: CaseRunner = async (c, ctx) => {
  const base = decodeVQ(c.kwargs)
  if (E.isLeft(base)) return base
  const loaded = loadCaseState(makeVectorQuantize(base.right), c.state)
  if (E.isLeft(loaded)) return loaded
  const runs = await runEachCaseRun(c, ctx, loaded.right, (run) => E.map(makeVectorQuantize)(decodeVQ({ ...c.kwargs, ...configKwargs(run) })), vqOutputs, 'threaded', {
    inputs: Object.keys(FORWARD_INPUTS),
    call: (run) => vqRunCall(run, base.right.num_codebooks),
  })
  if (E.isLeft(runs)) return runs
  return E.right({ runs: runs.right })
}
