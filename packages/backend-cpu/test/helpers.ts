import type { HostTensor, Tensor } from '@tessera/core'
import { traceOrThrow } from '@tessera/core'
import { floatIn, hostArb, shapeArb } from '@tessera/core/testing'
import fc from 'fast-check'
import { interpretProgram } from '../src/index.js'

/** Trace `fn` over the given inputs' avals and evaluate it with the reference. */
export function evalFn(inputs: readonly HostTensor[], fn: (...ts: Tensor[]) => Tensor | readonly Tensor[]): HostTensor[] {
  const { program } = traceOrThrow(inputs as HostTensor[], (...ts: Tensor[]) => {
    const r = fn(...ts)
    return r instanceof Array ? [...r] : [r]
  })
  return interpretProgram(program, inputs)
}

export const values = (t: HostTensor): number[] => Array.from(t.data as ArrayLike<number>)

/** A float tensor of a random shape (rank 1..3, dims 1..4) with values in [-lim, lim]. */
export const floatTensor = (lim = 100, minRank = 1, maxRank = 3) =>
  shapeArb(minRank, maxRank).chain((s) => hostArb(s, 'float32', floatIn(-lim, lim)))

/** Row-major multi-index of a flat position. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length)
  for (let a = shape.length - 1; a >= 0; a--) {
    idx[a] = i % shape[a]!
    i = Math.floor(i / shape[a]!)
  }
  return idx
}

export function ravel(idx: readonly number[], shape: readonly number[]): number {
  return idx.reduce((acc, v, a) => acc * shape[a]! + v, 0)
}
