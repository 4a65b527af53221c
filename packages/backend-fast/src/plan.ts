import type { Eqn, Prim, Program, Var } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import type { GeneratedKernel } from './kernels.js'
import { elementwiseKernel, reduceKernel } from './kernels.js'
import type { NearestStep } from './nearest.js'
import { matchNearest } from './nearest.js'

/** Primitives whose result is always stored (they are loops of their own). */
const STORED: ReadonlySet<Prim> = new Set<Prim>([
  'reduce_sum', 'reduce_max', 'reduce_min', 'argmin', 'argmax', 'matmul', 'gather', 'concat', 'pad',
  'constant', 'random_uniform',
])
/** Primitives that read their operands from buffers (no fused prologue). */
const READS_BUFFERS: ReadonlySet<Prim> = new Set<Prim>(['matmul', 'gather', 'concat', 'pad', 'random_uniform'])
const REDUCTIONS: ReadonlySet<Prim> = new Set<Prim>(['reduce_sum', 'reduce_max', 'reduce_min', 'argmin', 'argmax'])
const TRANSCENDENTAL: ReadonlySet<Prim> = new Set<Prim>(['exp', 'log', 'tanh', 'atanh', 'pow'])
const MOVEMENT: ReadonlySet<Prim> = new Set<Prim>(['reshape', 'broadcast', 'transpose', 'slice'])

export type Step =
  | { readonly kind: 'kernel'; readonly out: number; readonly kernel: GeneratedKernel; readonly prim: Prim; readonly sideOuts?: readonly number[] }
  | { readonly kind: 'matmul'; readonly out: number; readonly a: number; readonly b: number; readonly dims: readonly [number, number, number, number] }
  | { readonly kind: 'reference'; readonly out: number; readonly eqn: Eqn; readonly ins: readonly number[] }
  | { readonly kind: 'nearest'; readonly out: number; readonly step: NearestStep }

export interface Plan {
  readonly steps: readonly Step[]
  readonly slots: number
  /** Slot of each program input and output. */
  readonly inputSlots: readonly number[]
  readonly outputSlots: readonly number[]
  /** Variable (aval) stored in each slot. */
  readonly slotVars: readonly Var[]
  /** Release worker threads held by kernels. */
  dispose(): void
}

export interface PlanOptions {
  /** Recognize distance-then-argmin and run it as one WebAssembly SIMD kernel. */
  readonly wasm: boolean
  /** Threads the WebAssembly kernel may use, counting the calling thread. */
  readonly threads: number
}

/**
 * Decide which values are stored and which are recomputed inline, then turn the program into
 * steps: generated JS loops (elementwise chains fused into one loop or into a reduction's
 * prologue; movement ops as index arithmetic), a float64-exact matmul, the WebAssembly
 * nearest-code kernel, and the reference implementation for rare data-movement ops.
 */
export function planProgram(program: Program, opts: PlanOptions): Plan {
  const def = new Map<number, Eqn>()
  const uses = new Map<number, Eqn[]>()
  for (const e of program.eqns) {
    def.set(e.out.id, e)
    for (const v of e.inputs) {
      const u = uses.get(v.id)
      if (u) u.push(e)
      else uses.set(v.id, [e])
    }
  }
  const isInput = new Set(program.inputs.map((v) => v.id))
  const isOutput = new Set(program.outputs.map((v) => v.id))
  const stored = new Set<number>()
  const cheapMemo = new Map<number, boolean>()
  const cheap = (v: Var): boolean => {
    const c = cheapMemo.get(v.id)
    if (c !== undefined) return c
    const e = def.get(v.id)
    const r =
      !e || stored.has(v.id) || e.prim === 'full' || e.prim === 'iota' ||
      (MOVEMENT.has(e.prim) && cheap(e.inputs[0]!))
    cheapMemo.set(v.id, r)
    return r
  }
  const sizeOfVar = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)
  // Program order: a value's inputs are decided before the value itself.
  for (const v of program.inputs) stored.add(v.id)
  for (const e of program.eqns) {
    const v = e.out
    const us = uses.get(v.id) ?? []
    const mustStore =
      isOutput.has(v.id) ||
      STORED.has(e.prim) ||
      us.some((u) => READS_BUFFERS.has(u.prim)) ||
      // an expensive value read through an expanding broadcast would be recomputed per copy
      (!cheap(v) && us.some((u) => u.prim === 'broadcast' && sizeOfVar(u.out) > sizeOfVar(v))) ||
      // a transcendental read by several loops would be recomputed by each (softmax's exp)
      (TRANSCENDENTAL.has(e.prim) && us.length > 1)
    if (mustStore) stored.add(v.id)
  }

  // The nearest-code pattern keeps its matmul out of memory: the matmul is then not stored.
  const nearest = new Map<number, NearestStep>()
  if (opts.wasm) {
    for (const e of program.eqns) {
      if (e.prim !== 'argmin') continue
      const m = matchNearest(e, {
        def: (v) => def.get(v.id),
        stored: (v) => stored.has(v.id),
        uses: (v) => uses.get(v.id) ?? [],
        isOutput: (v) => isOutput.has(v.id),
      }, opts.threads)
      if (m) {
        nearest.set(e.out.id, m)
        stored.delete(m.matmul.out.id)
      }
    }
  }

  const slotOfId = new Map<number, number>()
  const slotVars: Var[] = []
  const slotOf = (v: Var): number => {
    let s = slotOfId.get(v.id)
    if (s === undefined) {
      s = slotVars.length
      slotOfId.set(v.id, s)
      slotVars.push(v)
    }
    return s
  }
  const inputSlots = program.inputs.map(slotOf)
  const env: EmitEnv & { slotOf(v: Var): number } = {
    def: (v) => def.get(v.id),
    bufName: (v) => (stored.has(v.id) ? `b${slotOf(v)}` : undefined),
    slotOf,
  }
  const absorbed = new Set([...nearest.values()].map((n) => n.matmul.out.id))
  const sides = sideOutputsOf(program, stored, absorbed, def, isInput)
  const steps: Step[] = []
  for (const e of program.eqns) {
    const v = e.out
    if (!stored.has(v.id) || absorbed.has(v.id)) continue
    const near = nearest.get(v.id)
    if (near) {
      near.prepare(env)
      steps.push({ kind: 'nearest', out: slotOf(v), step: near })
    } else if (REDUCTIONS.has(e.prim)) {
      const side = sides.get(v.id) ?? []
      steps.push({ kind: 'kernel', out: slotOf(v), kernel: reduceKernel(e, env, side), prim: e.prim, sideOuts: side.map(slotOf) })
    } else if (e.prim === 'matmul') {
      const [a, b] = e.inputs as [Var, Var]
      const r = a.aval.shape.length
      const batch = a.aval.shape.slice(0, -2).reduce((x, y) => x * y, 1)
      const dims = [batch, a.aval.shape[r - 2]!, a.aval.shape[r - 1]!, b.aval.shape[r - 1]!] as const
      steps.push({ kind: 'matmul', out: slotOf(v), a: slotOf(a), b: slotOf(b), dims })
    } else if (STORED.has(e.prim)) {
      steps.push({ kind: 'reference', out: slotOf(v), eqn: e, ins: e.inputs.map(slotOf) })
    } else {
      steps.push({ kind: 'kernel', out: slotOf(v), kernel: elementwiseKernel(v, env), prim: e.prim })
    }
  }
  const outputSlots = program.outputs.map(slotOf)
  const dispose = () => nearest.forEach((n) => n.dispose())
  return { steps, slots: slotVars.length, inputSlots, outputSlots, slotVars, dispose }
}

/**
 * Multi-output fusion: a stored elementwise value with the same shape as a later sum/max/min's
 * operand is computed inside that reduction's loop instead of by a loop of its own (FSQ's codes
 * and its index sum, LFQ's signs and its bit sum: one pass over the input instead of two).
 * Only when the reduced axes are trailing (so the loop walks the operand in row-major order),
 * and only when nothing reads the value before the reduction runs. Argmin/argmax are excluded:
 * their loop stops at the first NaN. Side outputs are added to `absorbed`.
 */
function sideOutputsOf(
  program: Program,
  stored: ReadonlySet<number>,
  absorbed: Set<number>,
  def: ReadonlyMap<number, Eqn>,
  isInput: ReadonlySet<number>,
): Map<number, Var[]> {
  const order = new Map<number, number>()
  program.eqns.forEach((e, k) => order.set(e.out.id, k))
  const firstUse = new Map<number, number>()
  program.eqns.forEach((e, k) => e.inputs.forEach((v) => firstUse.has(v.id) || firstUse.set(v.id, k)))
  const result = new Map<number, Var[]>()
  // does a stored (own-loop) equation before `k` read `id`, directly or through inlined values?
  const readBeforeBy = (id: number, k: number): boolean =>
    program.eqns.slice(0, k).some((q) => q.inputs.some((u) => u.id === id) && (stored.has(q.out.id) || readBeforeBy(q.out.id, k)))
  program.eqns.forEach((e, k) => {
    if (e.prim !== 'reduce_sum' && e.prim !== 'reduce_max' && e.prim !== 'reduce_min') return
    if (!stored.has(e.out.id) || absorbed.has(e.out.id)) return
    const shape = e.inputs[0]!.aval.shape
    const r = shape.length
    const axes = [...e.params.axes].sort((a, b) => a - b)
    if (axes.length === 0 || axes.some((a, i) => a !== r - axes.length + i)) return
    const sides: Var[] = []
    for (const [id, d] of def) {
      const at = order.get(id)!
      if (at >= k || !stored.has(id) || absorbed.has(id) || isInput.has(id) || STORED.has(d.prim)) continue
      const s = d.out.aval.shape
      if (s.length !== r || s.some((x, i) => x !== shape[i])) continue
      // a loop that runs before the reduction and reads this value would see an unwritten buffer
      if (readBeforeBy(id, k)) continue
      sides.push(d.out)
    }
    // The loop computes a side value at its own flat index; read through a movement op
    // (transpose, slice, broadcast, reshape) it is wanted at another index, which the emitter
    // takes from its buffer, unwritten at that point (found by the cross-backend gradient tests:
    // min over transpose(exp(tanh x)) read 0). Such values keep a loop of their own.
    const candidates = new Set(sides.map((v) => v.id))
    const movedReads = new Set<number>()
    const walk = (v: Var, moved: boolean): void => {
      if (stored.has(v.id) && (moved || !candidates.has(v.id))) {
        if (moved) movedReads.add(v.id)
        return
      }
      const d = def.get(v.id)
      if (!d) return
      const m = moved || MOVEMENT.has(d.prim)
      for (const u of d.inputs) walk(u, m)
    }
    walk(e.inputs[0]!, false)
    for (const v of sides) walk(v, false)
    const kept = sides.filter((v) => !movedReads.has(v.id))
    if (kept.length === 0) return
    for (const v of kept) absorbed.add(v.id)
    result.set(e.out.id, kept)
  })
  return result
}
