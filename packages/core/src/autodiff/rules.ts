import type { Tensor } from '../builder.js'
import { where } from '../builder.js'
import type { Prim, PrimParams } from '../prim.js'

/**
 * A VJP rule maps the cotangent of an equation's output to cotangents of its inputs.
 * `need[i]` says whether input i needs one (it depends on a differentiated input and is
 * float32); a rule returns `null` where it does not, or where the cotangent is zero, so no
 * dead equations are emitted. Rules emit ordinary equations through the Builder, so the
 * backward pass is a program like any other.
 */
export interface VjpArgs<P extends Prim> {
  readonly ct: Tensor
  readonly ins: readonly Tensor[]
  readonly out: Tensor
  readonly params: PrimParams[P]
  readonly need: readonly boolean[]
}

export type VjpRule<P extends Prim> = (args: VjpArgs<P>) => readonly (Tensor | null)[]

/** Primitives whose output carries no gradient (piecewise constant, integer or boolean, or sources). */
export const zeroGradient = (): readonly (Tensor | null)[] => []

const unaryRule =
  <P extends Prim>(f: (ct: Tensor, x: Tensor, out: Tensor) => Tensor): VjpRule<P> =>
  ({ ct, ins, out, need }) =>
    [need[0] ? f(ct, ins[0]!, out) : null]

/** The cotangent mask of maximum(a, b) for `a`: 1 where a wins, 1/2 on ties (torch splits ties evenly). */
function winnerShare(ct: Tensor, a: Tensor, b: Tensor, aWins: (a: Tensor, b: Tensor) => Tensor): Tensor {
  return where(aWins(a, b), ct, where(a.eq(b), ct.mul(0.5), 0))
}

/** Inverse of a permutation. */
function invertPerm(perm: readonly number[]): number[] {
  const inv = new Array<number>(perm.length)
  perm.forEach((p, i) => (inv[p] = i))
  return inv
}

/** The transpose of `slice`: put the cotangent back at the sliced positions, zeros elsewhere. */
function unslice(ct: Tensor, inShape: readonly number[], p: PrimParams['slice']): Tensor {
  if (ct.size === 0) return ct.builder.full(inShape, 0)
  let g = ct
  for (let ax = 0; ax < inShape.length; ax++) {
    const d = inShape[ax]!, start = p.start[ax]!, step = p.step[ax]!
    const m = g.shape[ax]!
    let len = m
    if (step > 1) {
      // interleave step-1 zeros after every element: (.., m, ..) -> (.., m, step, ..) -> (.., m*step, ..)
      const withStep = [...g.shape.slice(0, ax + 1), 1, ...g.shape.slice(ax + 1)]
      const lo = withStep.map(() => 0)
      const hi = withStep.map((_, i) => (i === ax + 1 ? step - 1 : 0))
      g = g.reshape(withStep).pad(lo, hi)
      g = g.reshape([...g.shape.slice(0, ax), m * step, ...g.shape.slice(ax + 2)])
      len = Math.min(m * step, d - start)
      g = g.sliceAxis(ax, 0, len)
    }
    if (start > 0 || start + len < d) {
      const lo = g.shape.map((_, i) => (i === ax ? start : 0))
      const hi = g.shape.map((_, i) => (i === ax ? d - start - len : 0))
      g = g.pad(lo, hi)
    }
  }
  return g
}

/** Sum a cotangent of the broadcast shape back to the operand's shape. */
function unbroadcast(ct: Tensor, inShape: readonly number[]): Tensor {
  const off = ct.rank - inShape.length
  const axes: number[] = []
  for (let i = 0; i < ct.rank; i++) if (i < off || (inShape[i - off] === 1 && ct.shape[i] !== 1)) axes.push(i)
  return ct.sum(axes).reshape(inShape)
}

/**
 * The cotangent of a reduce_max/min input: the output's cotangent goes to every position equal
 * to the extremum, divided evenly among ties (as torch's amax/amin backward does).
 */
function extremumRule<P extends 'reduce_max' | 'reduce_min'>(): VjpRule<P> {
  return ({ ct, ins, out, params, need }) => {
    if (!need[0]) return [null]
    const x = ins[0]!
    const keep = x.shape.map((d, i) => (params.axes.includes(i) ? 1 : d))
    const mask = x.eq(out.reshape(keep).broadcastTo(x.shape)).cast('float32')
    const count = mask.sum(params.axes, true)
    return [mask.mul(ct.reshape(keep).div(count))]
  }
}

/**
 * gather's transpose is a scatter-add, which has no primitive: it is a product with the one-hot
 * matrix of the indices, (d, ni) @ (outer, ni, inner) -> (outer, d, inner). It compiles
 * everywhere and costs d * ni * inner multiply-adds per outer row.
 */
function scatterAdd(ct: Tensor, x: Tensor, idx: Tensor, axis: number): Tensor {
  const d = x.shape[axis]!
  const outer = x.shape.slice(0, axis).reduce((a, b) => a * b, 1)
  const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1)
  const ni = idx.size
  const bl = ct.builder
  const oneHotT = bl.iota([d, ni], 0).eq(idx.reshape([1, ni]).broadcastTo([d, ni])).cast('float32')
  return oneHotT.matmul(ct.reshape([outer, ni, inner])).reshape(x.shape)
}

/** One VJP rule per primitive; a missing key fails the type check. */
export const vjpRules: { readonly [P in Prim]: VjpRule<P> } = {
  neg: unaryRule((ct) => ct.neg()),
  exp: unaryRule((ct, _x, out) => ct.mul(out)),
  log: unaryRule((ct, x) => ct.div(x)),
  sqrt: unaryRule((ct, _x, out) => ct.mul(0.5).div(out)),
  tanh: unaryRule((ct, _x, out) => ct.mul(out.mul(out).rsub(1))),
  atanh: unaryRule((ct, x) => ct.div(x.mul(x).rsub(1))),
  abs: unaryRule((ct, x) => ct.mul(x.sign())),
  // piecewise constant: zero almost everywhere, as in torch (straight-through is built by the
  // caller as x + stopGradient(q - x))
  sign: zeroGradient,
  floor: zeroGradient,
  round: zeroGradient,
  recip: unaryRule((ct, _x, out) => ct.mul(out.mul(out)).neg()),
  // casts between float32 only pass the cotangent; casts to int/bool have no float output and
  // casts from int/bool have no float input, so the driver never asks for those
  cast: unaryRule((ct) => ct),
  stop_gradient: zeroGradient,

  add: ({ ct, need }) => [need[0] ? ct : null, need[1] ? ct : null],
  sub: ({ ct, need }) => [need[0] ? ct : null, need[1] ? ct.neg() : null],
  mul: ({ ct, ins, need }) => [need[0] ? ct.mul(ins[1]!) : null, need[1] ? ct.mul(ins[0]!) : null],
  div: ({ ct, ins, out, need }) => [need[0] ? ct.div(ins[1]!) : null, need[1] ? ct.mul(out).div(ins[1]!).neg() : null],
  idiv: zeroGradient,
  mod: zeroGradient,
  pow: ({ ct, ins, out, need }) => {
    const [a, b] = ins as [Tensor, Tensor]
    // torch's pow_backward: d/da = b * a^(b-1), 0 where b == 0; d/db = out * log(a), 0 where a == 0 and b >= 0
    const da = need[0] ? ct.mul(where(b.eq(0), 0, b.mul(a.pow(b.sub(1))))) : null
    const db = need[1] ? ct.mul(where(a.eq(0).and(b.ge(0)), 0, out.mul(a.log()))) : null
    return [da, db]
  },
  max: ({ ct, ins, need }) => {
    const [a, b] = ins as [Tensor, Tensor]
    return [need[0] ? winnerShare(ct, a, b, (p, q) => p.gt(q)) : null, need[1] ? winnerShare(ct, b, a, (p, q) => p.gt(q)) : null]
  },
  min: ({ ct, ins, need }) => {
    const [a, b] = ins as [Tensor, Tensor]
    return [need[0] ? winnerShare(ct, a, b, (p, q) => p.lt(q)) : null, need[1] ? winnerShare(ct, b, a, (p, q) => p.lt(q)) : null]
  },
  lt: zeroGradient,
  le: zeroGradient,
  eq: zeroGradient,

  where: ({ ct, ins, need }) => {
    const c = ins[0]!
    return [null, need[1] ? where(c, ct, 0) : null, need[2] ? where(c, 0, ct) : null]
  },

  reshape: unaryRule((ct, x) => ct.reshape(x.shape)),
  broadcast: unaryRule((ct, x) => unbroadcast(ct, x.shape)),
  transpose: ({ ct, params, need }) => [need[0] ? ct.transpose(invertPerm(params.perm)) : null],
  slice: ({ ct, ins, params, need }) => [need[0] ? unslice(ct, ins[0]!.shape, params) : null],
  pad: ({ ct, ins, params, need }) => {
    const x = ins[0]!
    return [need[0] ? ct.slice(params.lo, params.lo.map((l, i) => l + x.shape[i]!)) : null]
  },
  concat: ({ ct, ins, params, need }) => {
    let off = 0
    return ins.map((x, k) => {
      const w = x.shape[params.axis]!
      const g = need[k] ? ct.sliceAxis(params.axis, off, off + w) : null
      off += w
      return g
    })
  },

  reduce_sum: ({ ct, ins, params, need }) => {
    if (!need[0]) return [null]
    const x = ins[0]!
    return [ct.reshape(x.shape.map((d, i) => (params.axes.includes(i) ? 1 : d))).broadcastTo(x.shape)]
  },
  reduce_max: extremumRule(),
  reduce_min: extremumRule(),
  argmin: zeroGradient,
  argmax: zeroGradient,

  matmul: ({ ct, ins, need }) => {
    const [a, b] = ins as [Tensor, Tensor]
    return [need[0] ? ct.matmul(b.mT) : null, need[1] ? a.mT.matmul(ct) : null]
  },
  gather: ({ ct, ins, params, need }) => [need[0] ? scatterAdd(ct, ins[0]!, ins[1]!, params.axis) : null, null],

  iota: zeroGradient,
  full: zeroGradient,
  constant: zeroGradient,
  random_uniform: zeroGradient,

  // as jax's psum: the transpose of a sum over ranks is the sum over ranks of the cotangents (and
  // mean's is mean), i.e. each rank gets the gradient of the sum of every rank's objective
  all_reduce: ({ ct, params, need }) => [need[0] ? ct.allReduce(params.op) : null],
  axis_index: zeroGradient,
}
