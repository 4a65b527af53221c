import fc from 'fast-check'
import { Builder } from '../builder.js'
import type { DType, Shape } from '../dtype.js'
import { sizeOf } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import { tensorOf } from '../host-tensor.js'
import type { Prim, PrimParams } from '../prim.js'
import type { Program } from '../program.js'
import { makeProgram } from '../program.js'

/** A program with the inputs to run it on: what every conformance case generates. */
export interface ProgramCase {
  readonly program: Program
  readonly inputs: readonly HostTensor[]
}

const MIN_NORMAL = 2 ** -126

/**
 * Bounded, finite float32 values (fast-check's float needs float32 bounds). Subnormals become 0:
 * GPUs flush them, and a flushed input would turn exact ops (sign, floor, cast) into different
 * answers for a reason that is not a bug.
 */
export const floatIn = (min: number, max: number): fc.Arbitrary<number> =>
  fc
    .float({ min: Math.fround(min), max: Math.fround(max), noNaN: true, noDefaultInfinity: true })
    .map((v) => (Math.abs(v) < MIN_NORMAL ? 0 : v))

/** Multiples of 1/256: exact in float32 and full of ties (x.5) for round/floor/argmin. */
export const grid = (maxAbs: number, denom = 256): fc.Arbitrary<number> =>
  fc.integer({ min: -maxAbs * denom, max: maxAbs * denom }).map((v) => v / denom)

export const intIn = (min: number, max: number): fc.Arbitrary<number> => fc.integer({ min, max })

export const boolElem: fc.Arbitrary<number> = fc.constantFrom(0, 1)

export const shapeArb = (minRank = 0, maxRank = 3, maxDim = 4): fc.Arbitrary<number[]> =>
  fc.array(fc.integer({ min: 1, max: maxDim }), { minLength: minRank, maxLength: maxRank })

export const hostArb = <D extends DType>(shape: Shape, dtype: D, elem: fc.Arbitrary<number>): fc.Arbitrary<HostTensor<D>> =>
  fc.array(elem, { minLength: sizeOf(shape), maxLength: sizeOf(shape) }).map((d) => tensorOf(d, shape, dtype))

/** A permutation of 0..n-1. */
export const permArb = (n: number): fc.Arbitrary<number[]> =>
  fc.shuffledSubarray([...Array(n).keys()], { minLength: n, maxLength: n })

/** One equation over fresh program inputs: the exact primitive under test, nothing simplified away. */
export function oneEqn<P extends Prim>(prim: P, params: PrimParams[P], inputs: readonly HostTensor[]): ProgramCase {
  const b = new Builder()
  const ts = inputs.map((t) => b.input({ shape: t.shape, dtype: t.dtype }))
  const out = b.bind(prim, params, ts)
  return { program: makeProgram(ts.map((t) => t.v), b.eqns, [out.v]), inputs }
}
