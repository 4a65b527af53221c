import type { HostTensor, Tensor } from '@tessera/core'
import { concat, describeValue } from '@tessera/core'

/**
 * The finite-input policy of training calls (docs/NUMERICS.md, "Non-finite input"):
 * - `'error'` (the default in training): a non-finite value in the input, or in a statistic the
 *   call computes (new float32 state entries, the loss and its terms), makes the call a Left of kind
 *   `input` naming the input and the first bad position, or the statistic; no state comes back,
 *   so the caller's state is untouched;
 * - `'skip-update'`: the call returns its outputs, but the returned state is the state passed
 *   in, and `nonFinite` on the result says what was found;
 * - `'propagate'` (the default in eval): no check; values flow through as IEEE arithmetic gives them.
 */
export type NonFinitePolicy = 'error' | 'skip-update' | 'propagate'

const F32_MAX = 3.4028234663852886e38

/** 1 where finite, 0 where NaN or ±Inf (|NaN| <= max is false), as float32 so argmin finds the first 0. */
const finiteMask = (t: Tensor): Tensor => t.abs().le(F32_MAX).cast('float32')

export interface FiniteProbe {
  /**
   * int32 scalar computed in the program: the first non-finite position of the input (flat,
   * row-major), else `inputSize + j` for the first non-finite statistic `labels[j]`, else
   * `inputSize + labels.length` when everything is finite. One fused reduction (an argmin over the
   * input's finiteness mask, the statistics' flags and a final 0).
   */
  readonly first: Tensor
  readonly inputSize: number
  readonly labels: readonly string[]
}

/** Build the probe: `stats` are the named float32 values whose finiteness is checked after the input. */
export function probeFinite(x: Tensor, stats: readonly (readonly [string, Tensor])[]): FiniteProbe {
  const bl = x.builder
  const parts: Tensor[] = []
  const checkX = x.dtype === 'float32' && x.size > 0
  if (checkX) parts.push(finiteMask(x).reshape([-1]))
  const labels: string[] = []
  for (const [name, t] of stats) {
    if (t.dtype !== 'float32' || t.size === 0) continue
    labels.push(name)
    parts.push(finiteMask(t).min().reshape([1]))
  }
  parts.push(bl.full([1], 0))
  return { first: concatTree(parts).argmin(0), inputSize: checkX ? x.size : 0, labels }
}

/**
 * Concatenate in groups of at most 8, nested: a backend may read only a few buffers per kernel
 * (gpu.js: caps.maxKernelArgs 12), and a quantizer can have dozens of state entries.
 */
function concatTree(parts: readonly Tensor[]): Tensor {
  if (parts.length <= 8) return concat(parts, 0)
  const groups: Tensor[] = []
  for (let i = 0; i < parts.length; i += 8) groups.push(concat(parts.slice(i, i + 8), 0))
  return concatTree(groups)
}

/** Whether the probe found everything finite (a traced bool scalar, for `skip-update`). */
export const probeOk = (p: FiniteProbe): Tensor => p.first.eq(p.inputSize + p.labels.length)

/** Row-major multi-index of a flat position. */
function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length).fill(0)
  for (let a = shape.length - 1; a >= 0; a--) {
    idx[a] = i % shape[a]!
    i = Math.floor(i / shape[a]!)
  }
  return idx
}

/**
 * What the probe found, in words, or undefined when all is finite. `first` is the probe's value
 * read back on the host; `x` is the host input (to print the bad value).
 */
export function describeProbe(first: number, inputSize: number, labels: readonly string[], x: HostTensor, inputName = 'x'): string | undefined {
  if (first < inputSize)
    return `${inputName} is not finite at position [${unravel(first, x.shape).join(',')}] (flat ${first}): ${describeValue(x.data[first])}`
  const j = first - inputSize
  if (j < labels.length) return `the input is finite but the computed ${labels[j]} is not (values overflow float32 or become NaN)`
  return undefined
}
