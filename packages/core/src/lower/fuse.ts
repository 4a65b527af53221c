import type { Caps } from '../backend.js'
import type { DType, Shape } from '../dtype.js'
import { fmtAval, sizeOf, stridesOf } from '../dtype.js'
import { TesseraError } from '../error.js'
import { primKind } from '../prim.js'
import type { Eqn, EqnOf, Program, Var } from '../program.js'
import type { ElemOp, NodeId } from './kernel.js'
import { KernelBuilder } from './kernel.js'
import type { Plan, PlanBuffer, Step } from './plan.js'
import { ProgramGraph, isRemap } from './schedule/graph.js'
import type { NearestPattern } from './schedule/nearest.js'
import { matchNearest } from './schedule/nearest.js'
import { decideStorage } from './schedule/storage.js'

/**
 * Lowering: group a program's equations into kernels.
 *
 * A variable is materialized (gets a buffer and a kernel of its own) when it is a program output,
 * a constant or random draw, a gather operand, a value whose consumers end up in different
 * kernels, or a reduction (or anything computed from one) that would otherwise sit inside a
 * movement op, another reduction, or next to a second reduction in one kernel. Everything else is
 * inlined into its consumer: elementwise chains become expressions, movement ops become index
 * arithmetic. A kernel whose arguments exceed `caps.maxKernelArgs` is split by materializing the
 * inlined value that removes the most arguments.
 */
export function lowerProgram(program: Program, caps: Caps): Plan {
  const defs = new Map<number, Eqn>()
  program.eqns.forEach((e) => defs.set(e.out.id, e))
  const isInput = new Set(program.inputs.map((v) => v.id))
  const users = new Map<number, Eqn[]>()
  for (const e of program.eqns) for (const v of e.inputs) users.set(v.id, [...(users.get(v.id) ?? []), e])
  const outputIds = new Set(program.outputs.map((v) => v.id))

  // nearest-code search: the distance matrix is never a buffer, so only what a kernel stores must fit
  const near = nearestPatterns(program)
  const nested = new Set(near.map((n) => n.pattern.matmul as Eqn))
  const nearArgmins = new Map(near.map((n) => [n.pattern.select as Eqn, n.pattern.matmul as Eqn]))
  const inlinedDistances = new Set(near.flatMap((n) => n.inline))

  const forced = new Set<number>()
  for (const v of program.outputs) if (!isInput.has(v.id)) forced.add(v.id)
  for (const e of program.eqns) {
    if (e.prim === 'constant' || e.prim === 'random_uniform') forced.add(e.out.id)
    if (e.prim === 'random_uniform' || e.prim === 'gather')
      for (const v of e.inputs) if (!isInput.has(v.id)) forced.add(v.id)
  }

  // live equations: those an output depends on
  const live = new Set<number>()
  const mark = (v: Var) => {
    if (live.has(v.id) || isInput.has(v.id)) return
    live.add(v.id)
    for (const u of defs.get(v.id)!.inputs) mark(u)
  }
  program.outputs.forEach(mark)
  const liveEqns = program.eqns.filter((e) => live.has(e.out.id))
  for (const v of [...program.inputs, ...liveEqns.map((e) => e.out)]) if (!inlinedDistances.has(v.id)) checkSize(v, caps)

  const materialize = (): Set<number> => {
    const mat = new Set<number>()
    const owner = new Map<number, Set<number>>()
    for (let k = liveEqns.length - 1; k >= 0; k--) {
      const v = liveEqns[k]!.out.id
      if (forced.has(v)) {
        mat.add(v)
        owner.set(v, new Set([v]))
        continue
      }
      const o = new Set<number>()
      for (const u of users.get(v) ?? []) for (const r of owner.get(u.out.id) ?? []) o.add(r)
      // an index remap read by several kernels is recomputed by each (it is index arithmetic):
      // its operand inherits the owners, and is what gets a buffer if it needs one
      if (o.size > 1 && !isRemap(liveEqns[k]!.prim)) {
        mat.add(v)
        owner.set(v, new Set([v]))
      } else owner.set(v, o)
    }
    return mat
  }

  let mat: Set<number>
  for (;;) {
    mat = materialize()
    const add = violations(liveEqns, mat, isInput, defs, nearArgmins).filter((v) => !forced.has(v))
    if (add.length === 0) {
      const split = splitWide(liveEqns, mat, isInput, defs, caps)
      if (split === undefined) break
      forced.add(split)
      continue
    }
    for (const v of add) forced.add(v)
  }

  return buildPlan(program, liveEqns, mat, defs, isInput, outputIds, caps, nested)
}

/**
 * Nearest-code patterns as core's loop schedule recognizes them (its storage decides where an
 * epilogue stops), with the values each computes inline: its distances, their dot product and
 * the broadcasts of its row and column terms, none of them ever a buffer.
 */
function nearestPatterns(program: Program): { pattern: NearestPattern; inline: number[] }[] {
  const g = new ProgramGraph(program)
  const stored = decideStorage(g)
  return program.eqns.flatMap((e) => {
    const pattern = e.prim === 'argmin' || e.prim === 'argmax' ? matchNearest(e as EqnOf<'argmin'> | EqnOf<'argmax'>, g, (v) => stored.has(v.id)) : undefined
    if (!pattern) return []
    const inline: number[] = []
    const walk = (v: Var): void => {
      if (stored.has(v.id) && v.id !== pattern.matmul.out.id) return
      inline.push(v.id)
      if (v.id !== pattern.matmul.out.id) g.def(v)?.inputs.forEach(walk)
    }
    walk(pattern.select.inputs[0]!)
    return [{ pattern, inline }]
  })
}

function checkSize(v: Var, caps: Caps) {
  const n = sizeOf(v.aval.shape)
  const big = n >= caps.exactIntLimit ? n : v.aval.shape.find((d) => d >= caps.exactIntLimit)
  if (big !== undefined)
    throw new TesseraError(
      'backend',
      'lower',
      `${fmtAval(v.aval)} has ${n} elements; this backend indexes with floats and needs every size below ${caps.exactIntLimit}`,
    )
}

const isReduction = (e: Eqn) => {
  const k = primKind[e.prim]
  return k === 'reduce' || k === 'argreduce' || k === 'matmul'
}
const isElementwise = (e: Eqn) => {
  const k = primKind[e.prim]
  return k === 'unary' || k === 'binary' || k === 'ternary'
}

/**
 * Reductions inlined where they may not go. Walking each kernel's inlined tree: a reduction
 * inside another reduction's loop, or under a movement op other than reshape/broadcast, is
 * materialized; reductions reached through a broadcast ride along only when the kernel already
 * has a loop of the same length (they share it); reductions of a different length than the
 * kernel's loop are materialized.
 */
function violations(
  eqns: readonly Eqn[],
  mat: Set<number>,
  isInput: Set<number>,
  defs: Map<number, Eqn>,
  nearArgmins: ReadonlyMap<Eqn, Eqn>,
): number[] {
  const out: number[] = []
  const hasRed = new Map<number, boolean>()
  const inlined = (v: Var, root: Eqn) => !isInput.has(v.id) && (!mat.has(v.id) || defs.get(v.id) === root)
  const containsRed = (v: Var, root: Eqn): boolean => {
    if (!inlined(v, root)) return false
    const got = hasRed.get(v.id)
    if (got !== undefined) return got
    const e = defs.get(v.id)!
    const r = isReduction(e) || e.inputs.some((u) => containsRed(u, root))
    hasRed.set(v.id, r)
    return r
  }
  for (const root of eqns) {
    if (!mat.has(root.out.id) || root.prim === 'constant' || root.prim === 'random_uniform') continue
    hasRed.clear()
    const reds: { v: Var; size: number; via: boolean }[] = []
    const seen = new Set<string>()
    const walk = (v: Var, via: boolean) => {
      if (!inlined(v, root)) return
      const key = `${v.id}:${via}`
      if (seen.has(key)) return
      seen.add(key)
      const e = defs.get(v.id)!
      if (isReduction(e)) {
        reds.push({ v, size: loopLength(e), via })
        const dot = nearArgmins.get(e)
        // a nearest-code argmin keeps its distances inline, their dot product as a nested loop
        if (dot) nestedOperand(e.inputs[0]!, dot)
        // a reduction's operand holding another reduction would nest loops: materialize the operand
        else for (const u of e.inputs) if (containsRed(u, root)) out.push(u.id)
      } else if (isElementwise(e) || e.prim === 'reshape' || e.prim === 'stop_gradient' || e.prim === 'cast') {
        for (const u of e.inputs) walk(u, via)
      } else if (e.prim === 'broadcast') {
        walk(e.inputs[0]!, true)
      } else {
        for (const u of e.inputs) if (containsRed(u, root)) out.push(u.id)
      }
    }
    /** Inside an argmin's loop: its dot product nests; any other reduction is materialized. */
    const nestedOperand = (v: Var, dot: Eqn): void => {
      if (!inlined(v, root) || seen.has(`${v.id}:n`)) return
      seen.add(`${v.id}:n`)
      const e = defs.get(v.id)!
      if (e === dot) {
        for (const u of e.inputs) if (containsRed(u, root)) out.push(u.id)
      } else if (isReduction(e)) out.push(v.id)
      else for (const u of e.inputs) nestedOperand(u, dot)
    }
    walk(root.out, false)
    const direct = reds.find((r) => !r.via)
    for (const r of reds) if (!direct || r.size !== direct.size) out.push(r.v.id)
  }
  return out
}

function loopLength(e: Eqn): number {
  const s = e.inputs[0]!.aval.shape
  if (e.prim === 'matmul') return s[s.length - 1]!
  if (e.prim === 'argmin' || e.prim === 'argmax') return s[e.params.axis]!
  if (e.prim === 'reduce_sum' || e.prim === 'reduce_max' || e.prim === 'reduce_min') return e.params.axes.reduce((a, j) => a * s[j]!, 1)
  return 0
}

/** Buffers a kernel rooted at `root` reads, and the inlined values it contains. */
function kernelLeaves(root: Eqn, mat: Set<number>, isInput: Set<number>, defs: Map<number, Eqn>) {
  const leaves = new Map<number, Set<number>>()
  const walk = (v: Var): Set<number> => {
    const got = leaves.get(v.id)
    if (got) return got
    const s = new Set<number>()
    const e = defs.get(v.id)
    if (isInput.has(v.id) || (mat.has(v.id) && e !== root) || !e) s.add(v.id)
    else for (const u of e.inputs) for (const x of walk(u)) s.add(x)
    leaves.set(v.id, s)
    return s
  }
  walk(root.out)
  return leaves
}

function splitWide(eqns: readonly Eqn[], mat: Set<number>, isInput: Set<number>, defs: Map<number, Eqn>, caps: Caps) {
  for (const e of eqns) {
    if (!mat.has(e.out.id) || e.prim === 'constant' || e.prim === 'random_uniform') continue
    const leaves = kernelLeaves(e, mat, isInput, defs)
    const total = leaves.get(e.out.id)!.size
    if (total <= caps.maxKernelArgs) continue
    let best: number | undefined
    let bestSize = 1
    for (const [v, s] of leaves) {
      if (v === e.out.id || mat.has(v) || isInput.has(v)) continue
      if (s.size > bestSize && s.size < total + 1) {
        best = v
        bestSize = s.size
      }
    }
    if (best === undefined)
      throw new TesseraError(
        'backend',
        'lower',
        `${e.prim} producing ${fmtAval(e.out.aval)} reads ${total} buffers directly; this backend allows ${caps.maxKernelArgs} per kernel`,
      )
    return best
  }
  return undefined
}

type Ix = { readonly flat: NodeId } | { readonly axes: readonly NodeId[] }

function buildPlan(
  program: Program,
  eqns: readonly Eqn[],
  mat: Set<number>,
  defs: Map<number, Eqn>,
  isInput: Set<number>,
  outputIds: Set<number>,
  caps: Caps,
  nested: ReadonlySet<Eqn>,
): Plan {
  const buffers: PlanBuffer[] = []
  const bufOf = new Map<number, number>()
  const newBuf = (v: Var, kind: PlanBuffer['kind'], data?: PlanBuffer['data']) => {
    const id = buffers.length
    buffers.push(Object.freeze({ id, shape: v.aval.shape, dtype: v.aval.dtype, size: sizeOf(v.aval.shape), kind, ...(data ? { data } : {}) }))
    bufOf.set(v.id, id)
    return id
  }
  const inputs = program.inputs.map((v) => newBuf(v, 'input'))
  const steps: Step[] = []
  const gatherIndexInputs: { buf: number; bound: number; axis: number }[] = []

  for (const e of eqns) {
    if (!mat.has(e.out.id)) continue
    if (e.prim === 'constant') {
      newBuf(e.out, 'const', e.params.data)
      continue
    }
    const out = newBuf(e.out, 'temp')
    steps.push({ k: 'alloc', buf: out })
    if (e.prim === 'random_uniform') {
      steps.push({ k: 'random', key: bufOf.get(e.inputs[0]!.id)!, out })
      continue
    }
    if (e.prim === 'gather' && isInput.has(e.inputs[1]!.id))
      gatherIndexInputs.push({ buf: bufOf.get(e.inputs[1]!.id)!, bound: e.inputs[0]!.aval.shape[e.params.axis]!, axis: e.params.axis })
    const size = sizeOf(e.out.aval.shape)
    const kb = new KernelBuilder(size)
    const ctx: Ctx = { kb, defs, bufOf, root: e, hasReduce: false, depth: 0, nested, maxFlat: caps.exactIntLimit }
    const root = emit(ctx, e.out, { flat: kb.thread() })
    steps.push({ k: 'kernel', kernel: kb.finish(out, e.out.aval.dtype, root) })
  }

  // free temps after their last reader
  const lastRead = new Map<number, number>()
  steps.forEach((s, i) => {
    if (s.k === 'kernel') for (const b of s.kernel.args) lastRead.set(b, i)
    if (s.k === 'random') lastRead.set(s.key, i)
  })
  const outBufs = program.outputs.map((v) => bufOf.get(v.id)!)
  const keep = new Set(outBufs)
  const withFrees: Step[] = []
  const byStep = new Map<number, number[]>()
  for (const [b, i] of lastRead) if (buffers[b]!.kind === 'temp' && !keep.has(b)) byStep.set(i, [...(byStep.get(i) ?? []), b])
  steps.forEach((s, i) => {
    withFrees.push(s)
    for (const b of (byStep.get(i) ?? []).sort((x, y) => x - y)) withFrees.push({ k: 'free', buf: b })
  })
  void outputIds
  void caps
  return Object.freeze({ buffers, inputs, outputs: outBufs, steps: withFrees, gatherIndexInputs })
}

interface Ctx {
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
}

function toAxes(kb: KernelBuilder, ix: Ix, shape: Shape): NodeId[] {
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

function emit(ctx: Ctx, v: Var, ix: Ix): NodeId {
  const { kb } = ctx
  const shape = v.aval.shape
  const e = ctx.defs.get(v.id)
  const buf = ctx.bufOf.get(v.id)
  if (buf !== undefined && e !== ctx.root) {
    if (sizeOf(shape) === 0) return kb.lit(0, v.aval.dtype)
    return kb.load(buf, toFlat(kb, ix, shape), v.aval.dtype)
  }
  if (!e) throw new TesseraError('runtime', 'lower', `variable ${v.id} has no definition and no buffer`)
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
      return reduceLoop(ctx, e, op, rSize, dt, (level) => {
        const keep = inShape.map((_, j) => j).filter((j) => !rAxes.includes(j))
        const trailing = rAxes.every((j, q) => j === inShape.length - rAxes.length + q)
        // a flat index into the operand must stay exact: a large operand (an inlined distance matrix) is indexed by axes
        if (trailing && 'flat' in ix && sizeOf(inShape) < ctx.maxFlat) return emit(ctx, inV, { flat: kb.iadd(kb.imul(ix.flat, rSize), kb.ridx(level)) })
        const outAxes = toAxes(kb, ix, shape)
        const rIdx = toAxes(kb, { flat: kb.ridx(level) }, rAxes.map((j) => inShape[j]!))
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
      return reduceLoop(ctx, e, 'sum', kDim, dt, (level) => {
        const axes = toAxes(kb, ix, shape)
        const batch = axes.slice(0, r - 2)
        const rr = kb.ridx(level)
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
      throw new TesseraError('runtime', 'lower', `${e.prim} must have a buffer`)
    default: {
      // what is left is elementwise: the kernel op of the same name. `satisfies` fails tsc when a
      // new non-elementwise primitive reaches here without a case of its own.
      const op = e.prim satisfies ElemOp
      return kb.op(op, e.inputs.map((u) => emit(ctx, u, ix)), dt)
    }
  }
}

/**
 * A reduction loop around `body` (given the loop's level). The outermost level holds every
 * reduction of the kernel, all of one length; a nearest-code matmul inside it gets a nested loop.
 */
function reduceLoop(ctx: Ctx, e: Eqn, op: 'sum' | 'max' | 'min' | 'argmin' | 'argmax', size: number, dt: DType, body: (level: number) => NodeId): NodeId {
  const level = ctx.depth
  const nestedOk = level === 1 && ctx.nested.has(e)
  if ((level > 0 && !nestedOk) || (level === 0 && ctx.hasReduce && ctx.kb.loopSizes[0] !== size))
    throw new TesseraError('backend', 'lower', 'internal: nested or unequal reduction loops in one kernel (materialization missed a case)')
  if (level === 0) ctx.hasReduce = true
  ctx.kb.loopSizes[level] = size
  ctx.depth++
  const b = body(level)
  ctx.depth--
  return ctx.kb.reduce(op, size, b, dt, level)
}
