import type { DType, Shape } from '../dtype.js'
import { sizeOf, stridesOf } from '../dtype.js'
import { collectiveError } from '../distributed/refuse.js'
import { TesseraError } from '../error.js'
import type { Eqn, Var } from '../program.js'
import type { ElemOp, NodeId } from './kernel.js'
import { KernelBuilder } from './kernel.js'

/** Index of a value inside a kernel: a flat offset or one node per axis (movement ops rewrite it). */
export type Ix = { readonly flat: NodeId } | { readonly axes: readonly NodeId[] }

export interface Ctx {
  readonly kb: KernelBuilder
  readonly defs: Map<number, Eqn>
  readonly bufOf: Map<number, number>
  readonly root: Eqn
  hasReduce: boolean
  /** Loops the node being built sits in. */
  depth: number
  /** Nearest-code matmuls: the one kind of reduction that may nest inside a kernel's loop. */
  readonly nested: ReadonlySet<Eqn>
  /** Flat indices stay below this (the backend's exact integer range). */
  readonly maxFlat: number
  /** Most iterations a loop may run in one invocation, counted across the loops around it. */
  readonly maxLoop: number
}

export function toAxes(kb: KernelBuilder, ix: Ix, shape: Shape): NodeId[] {
  if ('axes' in ix) return [...ix.axes]
  const st = stridesOf(shape)
  return shape.map((d, j) => kb.imodc(kb.idivc(ix.flat, st[j]!), d))
}

function toFlat(kb: KernelBuilder, ix: Ix, shape: Shape): NodeId {
  if ('flat' in ix) return ix.flat
  const st = stridesOf(shape)
  let f = kb.ilit(0)
  shape.forEach((d, j) => {
    if (d !== 1) f = kb.iadd(f, kb.imul(ix.axes[j]!, st[j]!))
  })
  return f
}

export function emit(ctx: Ctx, v: Var, ix: Ix): NodeId {
  const { kb } = ctx
  const shape = v.aval.shape
  const e = ctx.defs.get(v.id)
  const buf = ctx.bufOf.get(v.id)
  if (buf !== undefined && e !== ctx.root) {
    if (sizeOf(shape) === 0) return kb.lit(0, v.aval.dtype)
    return kb.load(buf, toFlat(kb, ix, shape), v.aval.dtype)
  }
  if (!e) throw new TesseraError('backend', 'lower', `variable ${v.id} has no definition and no buffer`)
  const dt = v.aval.dtype
  switch (e.prim) {
    case 'stop_gradient':
      return emit(ctx, e.inputs[0]!, ix)
    case 'cast': {
      const a = emit(ctx, e.inputs[0]!, ix)
      return e.inputs[0]!.aval.dtype === dt ? a : kb.op('cast', [a], dt)
    }
    case 'reshape':
      return emit(ctx, e.inputs[0]!, { flat: toFlat(kb, ix, shape) })
    case 'broadcast': {
      const inShape = e.inputs[0]!.aval.shape
      const off = shape.length - inShape.length
      const inSize = sizeOf(inShape)
      if (inSize === 1) return emit(ctx, e.inputs[0]!, { flat: kb.ilit(0) })
      if ('flat' in ix && inShape.every((d, j) => d === shape[j + off]))
        return emit(ctx, e.inputs[0]!, { flat: kb.imodc(ix.flat, inSize) })
      const axes = toAxes(kb, ix, shape)
      return emit(ctx, e.inputs[0]!, { axes: inShape.map((d, j) => (d === 1 ? kb.ilit(0) : axes[j + off]!)) })
    }
    case 'transpose': {
      const axes = toAxes(kb, ix, shape)
      const inAxes: NodeId[] = []
      e.params.perm.forEach((p, j) => (inAxes[p] = axes[j]!))
      return emit(ctx, e.inputs[0]!, { axes: inAxes })
    }
    case 'slice': {
      const axes = toAxes(kb, ix, shape)
      const p = e.params
      return emit(ctx, e.inputs[0]!, { axes: axes.map((a, j) => kb.ioffset(kb.imul(a, p.step[j]!), p.start[j]!)) })
    }
    case 'pad': {
      const axes = toAxes(kb, ix, shape)
      const inShape = e.inputs[0]!.aval.shape
      const p = e.params
      if (sizeOf(inShape) === 0) return kb.lit(p.value, dt)
      let cond: NodeId | undefined
      const inAxes = axes.map((a, j) => {
        const lo = p.lo[j]!, d = inShape[j]!
        if (lo === 0 && p.hi[j] === 0) return a
        const c1 = kb.op('le', [kb.ilit(lo), a], 'bool')
        const c2 = kb.op('lt', [a, kb.ilit(lo + d)], 'bool')
        for (const c of [c1, c2]) cond = cond === undefined ? c : kb.op('where', [cond, c, kb.lit(0, 'bool')], 'bool')
        return kb.iclamp(kb.ioffset(a, -lo), d)
      })
      const val = emit(ctx, e.inputs[0]!, { axes: inAxes })
      return cond === undefined ? val : kb.op('where', [cond, val, kb.lit(p.value, dt)], dt)
    }
    case 'concat': {
      const axes = toAxes(kb, ix, shape)
      const ax = e.params.axis
      const pieces = e.inputs.filter((u) => u.aval.shape[ax]! > 0)
      let offs = 0
      const starts = pieces.map((u) => {
        const s = offs
        offs += u.aval.shape[ax]!
        return s
      })
      let acc: NodeId | undefined
      for (let k = pieces.length - 1; k >= 0; k--) {
        const u = pieces[k]!
        const d = u.aval.shape[ax]!
        const a = kb.iclamp(kb.ioffset(axes[ax]!, -starts[k]!), d)
        const val = emit(ctx, u, { axes: axes.map((x, j) => (j === ax ? a : x)) })
        acc = acc === undefined ? val : kb.op('where', [kb.op('lt', [axes[ax]!, kb.ilit(starts[k]! + d)], 'bool'), val, acc], dt)
      }
      return acc ?? kb.lit(0, dt)
    }
    case 'reduce_sum':
    case 'reduce_max':
    case 'reduce_min':
    case 'argmin':
    case 'argmax': {
      const inV = e.inputs[0]!
      const inShape = inV.aval.shape
      const rAxes = e.prim === 'argmin' || e.prim === 'argmax' ? [e.params.axis] : [...e.params.axes]
      const rSize = rAxes.reduce((a, j) => a * inShape[j]!, 1)
      const op = e.prim === 'reduce_sum' ? 'sum' : e.prim === 'reduce_max' ? 'max' : e.prim === 'reduce_min' ? 'min' : e.prim
      if (rSize === 0) return kb.lit(0, dt)
      return reduceLoop(ctx, e, op, rSize, dt, (r) => {
        const keep = inShape.map((_, j) => j).filter((j) => !rAxes.includes(j))
        const trailing = rAxes.every((j, q) => j === inShape.length - rAxes.length + q)
        // a flat index into the operand must stay exact: a large operand (an inlined distance matrix) is indexed by axes
        if (trailing && 'flat' in ix && sizeOf(inShape) < ctx.maxFlat) return emit(ctx, inV, { flat: kb.iadd(kb.imul(ix.flat, rSize), r) })
        const outAxes = toAxes(kb, ix, shape)
        const rIdx = toAxes(kb, { flat: r }, rAxes.map((j) => inShape[j]!))
        const inAxes: NodeId[] = []
        keep.forEach((j, q) => (inAxes[j] = outAxes[q]!))
        rAxes.forEach((j, q) => (inAxes[j] = rIdx[q]!))
        return emit(ctx, inV, { axes: inAxes })
      })
    }
    case 'matmul': {
      const [a, b] = e.inputs as [Var, Var]
      const r = shape.length
      const kDim = a.aval.shape[r - 1]!
      if (kDim === 0) return kb.lit(0, dt)
      return reduceLoop(ctx, e, 'sum', kDim, dt, (rr) => {
        const axes = toAxes(kb, ix, shape)
        const batch = axes.slice(0, r - 2)
        const av = emit(ctx, a, { axes: [...batch, axes[r - 2]!, rr] })
        const bv = emit(ctx, b, { axes: [...batch, rr, axes[r - 1]!] })
        return kb.op('mul', [av, bv], 'float32', { wide: true })
      })
    }
    case 'gather': {
      const [x, idx] = e.inputs as [Var, Var]
      const ax = e.params.axis
      const axes = toAxes(kb, ix, shape)
      const ir = idx.aval.shape.length
      const d = x.aval.shape[ax]!
      // out-of-range indices from inside a program are clamped (documented); program inputs are checked on the host
      const iv = kb.iclamp(emit(ctx, idx, { axes: axes.slice(ax, ax + ir) }), d)
      return emit(ctx, x, { axes: [...axes.slice(0, ax), iv, ...axes.slice(ax + ir)] })
    }
    case 'iota': {
      const a = toAxes(kb, ix, shape)[e.params.axis]!
      return dt === 'int32' ? a : kb.op('cast', [a], dt)
    }
    case 'full':
      return kb.lit(e.params.value, dt)
    case 'constant':
    case 'random_uniform':
      throw new TesseraError('backend', 'lower', `${e.prim} must have a buffer`)
    case 'all_reduce':
    case 'axis_index':
      throw collectiveError(e.prim, 'lower')
    default: {
      // what is left is elementwise: the kernel op of the same name. `satisfies` fails tsc when a
      // new non-elementwise primitive reaches here without a case of its own.
      const op = e.prim satisfies ElemOp
      return kb.op(op, e.inputs.map((u) => emit(ctx, u, ix)), dt)
    }
  }
}

/**
 * A reduction loop around `body` (given the loop index). The outermost level holds every
 * reduction of the kernel, all of one length; a reduction the lowering allowed to nest (a
 * nearest-code dot product, or one whose result is too large to store) gets a loop inside it. A
 * loop longer than the backend's `maxLoop` becomes two nested loops over chunks (partial sums,
 * maxima or minima, then their reduction).
 */
/** Share of a backend's loop limit the lowering plans for (llvmpipe's count is not exact to the iteration). */
const LOOP_MARGIN = 0.9

/**
 * A reduction loop around `body` (given the element index). The outermost level holds every
 * reduction of the kernel, all of one length; a reduction the lowering allowed to nest (a
 * nearest-code dot product, or one whose result is too large to store) gets a loop inside it.
 * Where the backend has a loop limit (llvmpipe stops a loop silently once it has run 65535
 * iterations in one invocation, counted across every run of the loops around it), each
 * iteration takes several elements so that the count stays within it; a loop of one iteration
 * is written out with no loop at all.
 */
function reduceLoop(ctx: Ctx, e: Eqn, op: 'sum' | 'max' | 'min' | 'argmin' | 'argmax', size: number, dt: DType, body: (r: NodeId) => NodeId): NodeId {
  const { kb } = ctx
  const level = ctx.depth
  const nestedOk = level >= 1 && ctx.nested.has(e)
  if (level > 0 && !nestedOk)
    throw new TesseraError('backend', 'lower', 'internal: nested or unequal reduction loops in one kernel (materialization missed a case)')
  // iterations the loops around this one run in one invocation
  const around = kb.loopSizes.slice(0, level).reduce((a, n) => a * n, 1)
  const budget = Math.floor((ctx.maxLoop * LOOP_MARGIN) / around) - 2
  // within the limit: one element an iteration; past it: as many as it takes, all when even one
  // iteration per surrounding iteration is too many
  const fits = around * (size + 2) <= ctx.maxLoop * LOOP_MARGIN
  const perIteration = fits ? 1 : budget < 1 ? size : Math.ceil(size / budget)
  if (!fits && (op === 'argmin' || op === 'argmax'))
    throw new TesseraError('backend', 'lower', `${e.prim} over ${size} elements in loops of ${around} iterations would run past this backend's loop limit (${ctx.maxLoop})`)
  const steps = Math.ceil(size / perIteration)
  if (steps > 1 && around * (steps + 2) > ctx.maxLoop)
    throw new TesseraError('backend', 'lower', `${e.prim} over ${size} elements in loops of ${around} iterations would run past this backend's loop limit (${ctx.maxLoop})`)
  if (level === 0 && ctx.hasReduce && kb.loopSizes[0] !== steps)
    throw new TesseraError('backend', 'lower', 'internal: unequal reduction loops in one kernel (materialization missed a case)')
  if (level === 0) ctx.hasReduce = true
  if (fits) {
    kb.loopSizes[level] = size
    ctx.depth++
    const b = body(kb.ridx(level))
    ctx.depth--
    return kb.reduce(op, size, b, dt, level)
  }
  kb.loopSizes[level] = steps
  ctx.depth++
  const base = steps > 1 ? kb.imul(kb.ridx(level), perIteration) : kb.ilit(0)
  let acc: NodeId | undefined
  for (let u = 0; u < perIteration; u++) {
    const r = kb.ioffset(base, u)
    // past the end (the last iteration): the last element again for max and min, 0 for a sum
    const v = body(size % perIteration === 0 ? r : kb.iclamp(r, size))
    const term = op === 'sum' && size % perIteration !== 0 ? kb.op('where', [kb.op('lt', [r, kb.ilit(size)], 'bool'), v, kb.lit(0, dt)], dt) : v
    acc = acc === undefined ? term : kb.op(op === 'sum' ? 'add' : (op as 'max' | 'min'), [acc, term], dt)
  }
  ctx.depth--
  return steps > 1 ? kb.reduce(op, steps, acc!, dt, level) : acc!
}
