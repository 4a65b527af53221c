/**
 * The TRAIN workload's agreement check. Every implementation, from the same parameters and batch,
 * runs the first TRACE_STEPS steps, carrying parameters and Adam state from step to step, and is
 * compared with Tessera's CPU reference:
 * - the loss of every step (relative difference at most 1e-3, the tolerance of the other
 *   workloads' scalar outputs: the implementations sum in different orders);
 * - FSQ's indices at step 1 (rounding half to even on the same bounded values);
 * - the encoder's first-layer update at step 1. FSQ rounds with a straight-through gradient; had an
 *   implementation cut the gradient at the rounding, the encoder would not move (Adam's first step
 *   moves each weight by about lr). The mean |update − reference update| must stay under lr / 100.
 */
import type { CheckResult } from './workloads.js'

export const TRACE_STEPS = 5

export interface TrainTrace {
  /** Loss of steps 1..TRACE_STEPS. */
  readonly losses: readonly number[]
  /** FSQ indices of step 1, (batch, tokens) flattened. */
  readonly indices: Int32Array
  /** `encoder.0.weight` after step 1 minus before, (out, in) flattened. */
  readonly encoderDelta: Float32Array
}

const LOSS_RTOL = 1e-3
const fmtE = (x: number) => (x === 0 ? '0' : x.toExponential(1))

export function compareTrainTraces(ref: TrainTrace, got: TrainTrace, lr: number): CheckResult {
  if (got.losses.length !== ref.losses.length) return { ok: false, ties: 0, note: `${got.losses.length} losses, expected ${ref.losses.length}` }
  const rel = got.losses.map((l, i) => Math.abs(l - ref.losses[i]!) / Math.abs(ref.losses[i]!))
  const maxRel = Math.max(...rel)
  let idxDiff = 0
  for (let i = 0; i < ref.indices.length; i++) if (ref.indices[i] !== got.indices[i]) idxDiff++
  if (got.encoderDelta.length !== ref.encoderDelta.length)
    return { ok: false, ties: 0, note: `encoder update has ${got.encoderDelta.length} elements, expected ${ref.encoderDelta.length}` }
  let sum = 0, max = 0, moved = 0
  for (let i = 0; i < ref.encoderDelta.length; i++) {
    const d = Math.abs(got.encoderDelta[i]! - ref.encoderDelta[i]!)
    sum += d
    max = Math.max(max, d)
    if (got.encoderDelta[i] !== 0) moved++
  }
  const meanDelta = sum / ref.encoderDelta.length / lr
  const note =
    `loss of steps 1-${ref.losses.length} vs reference: max relative difference ${fmtE(maxRel)} (step 1 ${got.losses[0]!.toPrecision(6)} vs ${ref.losses[0]!.toPrecision(6)}); ` +
    `FSQ indices at step 1: ${idxDiff} of ${ref.indices.length} differ; encoder update at step 1: mean |Δ − Δref| ${fmtE(meanDelta)} lr, max ${fmtE(max / lr)} lr, ${moved} of ${ref.encoderDelta.length} weights moved`
  const ok = rel.every((r) => r <= LOSS_RTOL) && meanDelta <= 0.01
  return { ok, ties: 0, note }
}
