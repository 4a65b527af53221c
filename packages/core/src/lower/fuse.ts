import type { Caps } from '../backend.js'
import { refuseCollectives } from '../distributed/refuse.js'
import { sizeOf } from '../dtype.js'
import type { Eqn, Program, Var } from '../program.js'
import { KernelBuilder } from './kernel.js'
import type { Ctx } from './kernel-emit.js'
import { emit, toAxes } from './kernel-emit.js'
import { checkSize, hostKeySlices, nearestPatterns, splitWide, violations } from './materialize.js'
import type { Plan, PlanBuffer, Step } from './plan.js'
import { isRemap } from './schedule/graph.js'
import { splitWideConcats } from './wide.js'

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
export function lowerProgram(source: Program, caps: Caps): Plan {
  refuseCollectives(source, 'lower')
  const { program, forced: wideConcats } = splitWideConcats(source, caps.maxKernelArgs)
  const defs = new Map<number, Eqn>()
  program.eqns.forEach((e) => defs.set(e.out.id, e))
  const isInput = new Set(program.inputs.map((v) => v.id))
  const users = new Map<number, Eqn[]>()
  for (const e of program.eqns)
    for (const v of e.inputs) {
      const u = users.get(v.id)
      if (u) u.push(e)
      else users.set(v.id, [e])
    }
  const outputIds = new Set(program.outputs.map((v) => v.id))

  // nearest-code search: the distance matrix is never a buffer, so only what a kernel stores must fit
  const near = nearestPatterns(program)
  const nested = new Set(near.map((n) => n.pattern.matmul as Eqn))
  const nearArgmins = new Map(near.map((n) => [n.pattern.select as Eqn, n.pattern.matmul as Eqn]))
  const inlinedDistances = new Set(near.flatMap((n) => n.inline))

  const forced = new Set<number>(wideConcats)
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
  // key arithmetic runs on the host: each value a host step computes gets a buffer, no kernel
  const onHost = hostKeySlices(liveEqns, defs, isInput)
  for (const id of onHost) forced.add(id)
  // values too large to store are recomputed where they are read (their loops nested); what
  // does get a buffer is checked when the plan is built
  const huge = (v: Var) => !inlinedDistances.has(v.id) && sizeOf(v.aval.shape) >= caps.exactIntLimit

  // index remaps, literals and iotas cost nothing to recompute in every kernel that reads them
  const recomputed = (p: Eqn['prim']) => isRemap(p) || p === 'full' || p === 'iota'
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
      // its operand inherits the owners, and is what gets a buffer if it needs one; so is a
      // value too large to store
      if (o.size > 1 && !recomputed(liveEqns[k]!.prim) && !huge(liveEqns[k]!.out)) {
        mat.add(v)
        owner.set(v, new Set([v]))
      } else owner.set(v, o)
    }
    return mat
  }

  let mat: Set<number>
  let nestedLarge = new Set<Eqn>()
  for (;;) {
    mat = materialize()
    nestedLarge = new Set<Eqn>()
    const add = violations(liveEqns, mat, isInput, defs, nearArgmins, onHost, huge, nestedLarge).filter((v) => !forced.has(v))
    if (add.length === 0) {
      const splits = splitWide(liveEqns, mat, isInput, defs, caps, onHost)
      if (splits.length === 0) break
      for (const v of splits) forced.add(v)
      continue
    }
    for (const v of add) forced.add(v)
  }

  for (const e of nestedLarge) nested.add(e)
  return buildPlan(program, liveEqns, mat, defs, isInput, outputIds, caps, nested, onHost)
}


function buildPlan(
  program: Program,
  eqns: readonly Eqn[],
  mat: Set<number>,
  defs: Map<number, Eqn>,
  isInput: Set<number>,
  outputIds: Set<number>,
  caps: Caps,
  nested: ReadonlySet<Eqn>,
  onHost: ReadonlySet<number>,
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
  for (const v of program.inputs) checkSize(v, caps, 'the input')
  const outputVars = new Set(program.outputs.map((v) => v.id))
  // an output too large for one buffer is written in parts along its first axis (see splitOutput)
  const inParts = (e: Eqn) => outputVars.has(e.out.id) && partRows(e.out, caps) !== undefined && kernelRoot(e)
  const kernelRoot = (e: Eqn) => e.prim !== 'constant' && e.prim !== 'random_uniform' && !onHost.has(e.out.id)
  for (const e of eqns) {
    if (mat.has(e.out.id) && !inParts(e)) checkSize(e.out, caps, outputVars.has(e.out.id) ? `the output (${e.prim})` : `the ${e.prim} result (stored: read by several kernels, or where a kernel cannot recompute it)`)
    // an inlined reshape indexes its value by a flat offset, inexact past the backend's range
    else if (e.prim === 'reshape' && sizeOf(e.out.aval.shape) >= caps.exactIntLimit) checkSize(e.out, caps, 'the reshaped value')
  }
  const steps: Step[] = []
  const gatherIndexInputs: { buf: number; bound: number; axis: number }[] = []

  const partsOf = new Map<number, number>()
  for (const e of eqns) {
    if (!mat.has(e.out.id)) continue
    if (inParts(e)) {
      partsOf.set(e.out.id, splitOutput(e, partRows(e.out, caps)!, buffers, steps, (k) => ({ kb: k, defs, bufOf, root: e, hasReduce: false, depth: 0, nested, maxFlat: caps.exactIntLimit, maxLoop: caps.maxLoop ?? Infinity })))
      continue
    }
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
    if (onHost.has(e.out.id)) {
      steps.push({ k: 'host', eqn: e, ins: e.inputs.map((v) => bufOf.get(v.id)!), out })
      continue
    }
    if (e.prim === 'gather' && isInput.has(e.inputs[1]!.id))
      gatherIndexInputs.push({ buf: bufOf.get(e.inputs[1]!.id)!, bound: e.inputs[0]!.aval.shape[e.params.axis]!, axis: e.params.axis })
    const size = sizeOf(e.out.aval.shape)
    const kb = new KernelBuilder(size)
    const ctx: Ctx = { kb, defs, bufOf, root: e, hasReduce: false, depth: 0, nested, maxFlat: caps.exactIntLimit, maxLoop: caps.maxLoop ?? Infinity }
    const root = emit(ctx, e.out, { flat: kb.thread() })
    steps.push({ k: 'kernel', kernel: kb.finish(out, e.out.aval.dtype, root) })
  }

  // free temps after their last reader
  const lastRead = new Map<number, number>()
  steps.forEach((s, i) => {
    if (s.k === 'kernel') for (const b of s.kernel.args) lastRead.set(b, i)
    if (s.k === 'random') lastRead.set(s.key, i)
    if (s.k === 'host') for (const b of s.ins) lastRead.set(b, i)
  })
  const outBufs = program.outputs.map((v) => bufOf.get(v.id) ?? partsOf.get(v.id)!)
  const keep = new Set(outBufs.flatMap((b) => [b, ...(buffers[b]!.parts ?? [])]))
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


/** Rows of its first axis per part for an output too large for one buffer (undefined: it fits, or cannot be split so). */
function partRows(v: Var, caps: Caps): number | undefined {
  const n = sizeOf(v.aval.shape)
  if (n < caps.exactIntLimit || v.aval.shape.length === 0) return undefined
  const row = n / v.aval.shape[0]!
  const rows = Math.floor((caps.exactIntLimit - 1) / row)
  return rows >= 1 ? rows : undefined
}

/**
 * Writes an output too large for one buffer as parts of `rows` rows of its first axis, each a
 * kernel of its own indexed by axes (a flat index into the whole would be inexact); the output's
 * buffer lists them in `parts` and backends join them on the host. Readers inside the program
 * recompute the value (it has no buffer they could read).
 */
function splitOutput(e: Eqn, rows: number, buffers: PlanBuffer[], steps: Step[], context: (kb: KernelBuilder) => Ctx): number {
  const shape = e.out.aval.shape
  const rest = shape.slice(1)
  const row = sizeOf(rest)
  const parts: number[] = []
  for (let r0 = 0; r0 < shape[0]!; r0 += rows) {
    const n = Math.min(rows, shape[0]! - r0)
    const id = buffers.length
    buffers.push(Object.freeze({ id, shape: [n, ...rest], dtype: e.out.aval.dtype, size: n * row, kind: 'temp' as const }))
    steps.push({ k: 'alloc', buf: id })
    const kb = new KernelBuilder(n * row)
    const t = kb.thread()
    const axes = [kb.iadd(kb.ilit(r0), kb.idivc(t, row)), ...toAxes(kb, { flat: kb.imodc(t, row) }, rest)]
    steps.push({ k: 'kernel', kernel: kb.finish(id, e.out.aval.dtype, emit(context(kb), e.out, { axes })) })
    parts.push(id)
  }
  const whole = buffers.length
  buffers.push(Object.freeze({ id: whole, shape, dtype: e.out.aval.dtype, size: sizeOf(shape), kind: 'temp' as const, parts }))
  return whole
}
