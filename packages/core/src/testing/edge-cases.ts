import type { DType } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import { tensorOf } from '../host-tensor.js'
import type { Prim, PrimParams } from '../prim.js'
import type { ProgramCase } from './arbitraries.js'
import { oneEqn } from './arbitraries.js'
import { traceOrThrow } from '../trace.js'

/**
 * Hand-built cases whose answers are part of the spec, so they are checked against the listed
 * values (not only against the reference): a reference that drifted would fail here too.
 */
export interface EdgeCase {
  readonly name: string
  readonly build: () => ProgramCase
  /** Expected output 0, element by element; NaN means "must be NaN". */
  readonly want: readonly number[]
  readonly wantDtype: DType
  /** Only meaningful for backends with caps.strictNaN. */
  readonly needsStrictNaN?: boolean
}

const t = (data: readonly number[], shape: readonly number[], dtype: DType = 'float32'): HostTensor => tensorOf(data, shape, dtype)

const one = <P extends Prim>(prim: P, params: PrimParams[P], ...ins: HostTensor[]) => () => oneEqn(prim, params, ins)

const roundIn = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -3.5, 0.49999997, -0.49999997, 2.5000002, 4194304.5, 4194305.5, -4194305.5]
const roundOut = [-2, -2, -0, 0, 2, 2, 4, -4, 0, -0, 3, 4194304, 4194306, -4194306]

// x * 0.1 where 0.1 is a scalar literal: the literal is the float32 0.1 (0.10000000149...), so the
// product is fround(x * fround(0.1)); a fused backend computing with the double 0.1 is an ulp off.
const literalX = [3, 7, 10, 13, 1e6 + 1]
const literalProduct = (): ProgramCase => {
  const tr = traceOrThrow([{ shape: [literalX.length], dtype: 'float32' }] as const, (x) => x.mul(0.1))
  return { program: tr.program, inputs: [t(literalX, [literalX.length])] }
}

/**
 * Nearest-code search whose distances overflow (docs/NUMERICS.md, "Overflow in nearest-code
 * search"): the index is argmin/argmax over the distances as float32 gives them, so a row whose
 * distances are all +Inf (argmin) or all -Inf (argmax) gets index 0, and a row with a NaN distance
 * gets its first NaN code, even after an infinite one. Codes (c0, c1) = (-1,0) (1,0) (-2,1) (2,1);
 * rows: an ordinary one (nearest code 1); |x|^2 overflowing to +Inf (2e19^2 and 3e19^2 exceed
 * float32's max) so every distance is +Inf; x = (Inf, 0), where x.c is -Inf for code 0 (distance
 * +Inf) and +Inf for code 1 (Inf - Inf: NaN); x = (NaN, 0), all NaN. Both forms backends fuse into
 * one kernel: |x|^2 - 2 x.c + |c|^2 with argmin, and VectorQuantize's -sqrt(max(., 1e-8)) with argmax.
 */
const nearestRows = [0.5, 0.25, 2e19, 0, Infinity, 0, NaN, 0, -3e19, 0]
const nearestCodes = [-1, 0, 1, 0, -2, 1, 2, 1]
const nearestOverflow = (vqForm: boolean) => (): ProgramCase => {
  const tr = traceOrThrow([{ shape: [5, 2], dtype: 'float32' }, { shape: [4, 2], dtype: 'float32' }] as const, (x, cb) => {
    const x2 = x.square().sum(-1, true)
    const xe = x.matmul(cb.mT)
    const e2 = cb.square().sum(-1)
    if (!vqForm) return x2.sub(xe.mul(2)).add(e2).argmin(-1)
    return x2.add(e2).add(xe.mul(-2)).maximum(1e-8).sqrt().neg().argmax(-1)
  })
  return { program: tr.program, inputs: [t(nearestRows, [5, 2]), t(nearestCodes, [4, 2])] }
}

export const edgeCases: readonly EdgeCase[] = [
  {
    name: 'a scalar literal takes its float32 value inside arithmetic',
    build: literalProduct,
    want: literalX.map((v) => Math.fround(v * Math.fround(0.1))),
    wantDtype: 'float32',
  },
  { name: 'round is half-to-even at .5 ties', build: one('round', {}, t(roundIn, [roundIn.length])), want: roundOut, wantDtype: 'float32' },
  {
    name: 'floor of negatives and exact integers',
    build: one('floor', {}, t([-0.5, -1, -1.0000001, 0.99999994, 2], [5])),
    want: [-1, -1, -2, 0, 2],
    wantDtype: 'float32',
  },
  {
    name: 'argmin takes the first index among ties (rows of a matrix)',
    build: one('argmin', { axis: 1 }, t([3, 1, 1, 2, 5, 5, 5, 5, 0, -0, 0, 7, 9, 8, 8, 8], [4, 4])),
    want: [1, 0, 0, 1],
    wantDtype: 'int32',
  },
  {
    name: 'argmax takes the first index among ties (columns)',
    build: one('argmax', { axis: 0 }, t([1, 7, 2, 7, 7, 2, 7, 3, 2], [3, 3])),
    want: [1, 0, 0],
    wantDtype: 'int32',
  },
  {
    name: 'argmin over int32 with ties',
    build: one('argmin', { axis: 0 }, t([4, -2, 3, -2, -2], [5], 'int32')),
    want: [1],
    wantDtype: 'int32',
  },
  {
    name: 'idiv floors toward -inf; a zero divisor gives 0',
    build: one('idiv', {}, t([-7, 7, -7, 7, 6, -6, 5], [7], 'int32'), t([2, -2, -2, 2, 3, 3, 0], [7], 'int32')),
    want: [-4, -4, 3, 3, 2, -2, 0],
    wantDtype: 'int32',
  },
  {
    name: 'mod takes the divisor sign; a zero divisor gives 0',
    build: one('mod', {}, t([-7, 7, -7, 7, 6, -6, 5], [7], 'int32'), t([2, -2, -2, 2, 3, 3, 0], [7], 'int32')),
    want: [1, -1, -1, 1, 0, 0, 0],
    wantDtype: 'int32',
  },
  {
    name: 'cast float to int32 truncates toward zero',
    build: one('cast', { dtype: 'int32' }, t([-1.5, -0.5, 0.5, 2.99, -2.99, 1e6], [6])),
    want: [-1, 0, 0, 2, -2, 1e6],
    wantDtype: 'int32',
  },
  {
    name: 'cast to bool is x != 0',
    build: one('cast', { dtype: 'bool' }, t([0, -0, 1e-30, -3], [4])),
    want: [0, 0, 1, 1],
    wantDtype: 'bool',
  },
  {
    name: 'NaN propagates through max',
    build: one('max', {}, t([NaN, 1, 2], [3]), t([0, NaN, 1], [3])),
    want: [NaN, NaN, 2],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'NaN propagates through min; -Infinity is kept',
    build: one('min', {}, t([NaN, 1, -Infinity], [3]), t([0, 2, 0], [3])),
    want: [NaN, 1, -Infinity],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'NaN propagates through reduce_sum',
    build: one('reduce_sum', { axes: [1] }, t([1, NaN, 2, 3, 4, 5], [2, 3])),
    want: [NaN, 12],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'NaN propagates through reduce_max',
    build: one('reduce_max', { axes: [0] }, t([1, 9, NaN, 3], [2, 2])),
    want: [NaN, 9],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'NaN propagates through reduce_min',
    build: one('reduce_min', { axes: [0, 1] }, t([1, -9, NaN, 3], [2, 2])),
    want: [NaN],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'NaN wins argmin (torch semantics)',
    build: one('argmin', { axis: 1 }, t([3, NaN, -5, NaN, 1, 0], [2, 3])),
    want: [1, 0],
    wantDtype: 'int32',
    needsStrictNaN: true,
  },
  {
    name: 'NaN propagates through matmul',
    build: one('matmul', {}, t([1, NaN, 2, 3], [2, 2]), t([1, 0, 0, 1], [2, 2])),
    want: [NaN, NaN, 2, 3],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'log of 0 is -Infinity, of a negative is NaN, of Infinity is Infinity',
    build: one('log', {}, t([0, -1, Infinity], [3])),
    want: [-Infinity, NaN, Infinity],
    wantDtype: 'float32',
    needsStrictNaN: true,
  },
  {
    name: 'nearest-code search (argmin form): overflowing rows give index 0, a NaN distance wins at its first code',
    build: nearestOverflow(false),
    want: [1, 0, 1, 0, 0],
    wantDtype: 'int32',
    needsStrictNaN: true,
  },
  {
    name: "nearest-code search (VectorQuantize's argmax form): the same rule through max(., 1e-8), sqrt and neg",
    build: nearestOverflow(true),
    want: [1, 0, 1, 0, 0],
    wantDtype: 'int32',
    needsStrictNaN: true,
  },
]
