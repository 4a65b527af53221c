import type { AnyTypedArray, Eqn, Prim, Program, Var } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import { callsTranscendental } from './emit.js'
import type { GeneratedKernel } from './kernels.js'
import type { ChainDesc, ChainStepDesc } from './kernels.js'
import { smallKFits, smallKLayout, smallKModule } from './wasm/smallk.js'
import type { MapModule, MapSpec, MathMap, ProOp } from './wasm/mathmap.js'
import { MAP_CHUNK, MAP_STEP, mathMapFactory, mathMapModule } from './wasm/mathmap.js'
import { CTRL_WORDS, ChainThreads, awaitBlocks, compileChain, elementwiseKernel, reduceKernel, runBlocks, sinkKernel } from './kernels.js'
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
  | { readonly kind: 'rows'; readonly chain: RowChain }
  | {
      readonly kind: 'map'
      /** The base array, the row operands' slots (one value per row of `width`), the result. */
      readonly in: number
      readonly rows: readonly number[]
      readonly width: number
      readonly out: number
      readonly module: MapModule
      readonly run: MathMap
    }

/**
 * Steps that share a leading (row) axis, run block by block: every step of the chain on rows
 * [lo, lo + R) before the next block, so intermediates used only inside the chain live in
 * block-sized buffers that stay in cache (W3b's 65536 x 1024 logits and probabilities: 256 MiB
 * each unblocked). Sums over the leading axis are sinks: float64 accumulators carried across
 * blocks and stored at the end. Every output element is computed by the same operations in the
 * same order as unblocked, so results are bit-identical.
 */
export interface RowChain {
  /** Rows of the leading axis, and rows per block. */
  readonly n: number
  readonly rows: number
  /** The chain's steps in order (kernels generated for a block of `R` rows). */
  readonly steps: readonly Step[]
  /** Slots the chain writes or reads in full (outputs and values used after it; inputs). */
  readonly fullSlots: readonly number[]
  /** Slots that hold only one block (intermediates used only inside the chain). */
  readonly localSlots: readonly number[]
  /** Threads that run its blocks (the calling thread included). */
  readonly threads: number
  /** What worker threads get: kernel sources, matmul shapes (with their WebAssembly kernel, if any), slots. */
  readonly desc: ChainDesc
  run(B: AnyTypedArray[], alloc: (slot: number) => AnyTypedArray): void
  dispose(): void
  /** Blocks the calling thread ran in the last call (the rest ran on worker threads). */
  readonly callerBlocks: number
}

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
  /**
   * Rows per block of a row-blocked chain. Default: chains are formed only when an intermediate
   * they keep out of memory has at least 2^20 elements, with blocks of about 32K elements of the
   * widest row. A number forces chains of any size with that many rows per block (tests).
   */
  readonly blockRows?: number
  /** Fused multiply-adds (relaxed SIMD) in the nearest-code kernel; the engine must support them. */
  readonly relaxedSimd?: boolean
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
  const leadingSum = (u: Eqn) => u.prim === 'reduce_sum' && u.params.axes.includes(0)
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
      (TRANSCENDENTAL.has(e.prim) && us.length > 1) ||
      // a computed value also summed over its leading axis (softmax probabilities and their mean
      // over samples): stored, it becomes a side output of the loop that computes it, and the
      // column sum (a row chain's sink, which threads run one block at a time in row order) only
      // adds instead of recomputing it (W3b: one division per element less, in the serial part)
      (!cheap(v) && v.aval.shape.length >= 2 && us.length > 1 && us.some(leadingSum))
    if (mustStore) stored.add(v.id)
  }

  // Large float32 exps run as a WebAssembly SIMD map (see wasm/mathmap.ts), the result stored (in a
  // row chain, block-local); the map replaces the JS helper call in the loop that would have
  // computed it. Its argument is read through a prologue of float32 ops when it has that form
  // (softmax's scaled logits minus the row max), else stored. W3b, one thread: the exp loop's
  // 950 ms became 340 + 290 + 100 ms for argument loop, map and sum with a stored argument. A log
  // map was measured too and lost on W3b (its JS log mostly sees the clamp's repeated argument,
  // which it memoizes).
  const mapped = new Map<number, MappedExp>()
  if (opts.wasm) {
    for (const e of program.eqns) {
      if (e.prim !== 'exp' || e.out.aval.dtype !== 'float32' || sizeOfVar(e.out) < MAP_MIN_ELEMS) continue
      const arg = e.inputs[0]!
      const pro = prologueOf(arg, (v) => def.get(v.id), (v) => stored.has(v.id))
      mapped.set(e.out.id, pro ?? { base: arg, rows: [], ops: [] })
      stored.add(e.out.id)
      if (!pro) stored.add(arg.id)
    }
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
      }, opts.threads, opts.relaxedSimd ?? false)
      if (m) {
        nearest.set(e.out.id, m)
        stored.delete(m.matmul.out.id)
        // B stored only because the matmul reads buffers (W1b's cb.mT, 4 MiB): the kernel packs
        // B into its own memory through B's definition, so that copy is the only one
        const b = m.matmul.inputs[1]!
        const bDef = def.get(b.id)
        if (bDef && !STORED.has(bDef.prim) && !isOutput.has(b.id) && (uses.get(b.id) ?? []).length === 1) stored.delete(b.id)
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
  // values computed by a step of their own (never a side output of a generated loop)
  const absorbed = new Set([...nearest.values()].map((n) => n.matmul.out.id))
  const ownStep = new Set(mapped.keys())
  const sides = sideOutputsOf(program, stored, absorbed, def, isInput, ownStep)
  const makeMap = mathMapFactory()
  const steps: Step[] = []
  for (const e of program.eqns) {
    const v = e.out
    if (!stored.has(v.id) || absorbed.has(v.id)) continue
    const near = nearest.get(v.id)
    const mp = mapped.get(v.id)
    if (mp) {
      const spec: MapSpec = { ops: mp.ops, rowArrays: mp.rows.length }
      const module = mathMapModule(spec, MAP_CHUNK)
      // the instance for a run outside a row chain (a chain makes one per thread from the module)
      let run: MathMap | undefined
      const width = v.aval.shape[v.aval.shape.length - 1] ?? 1
      steps.push({
        kind: 'map', in: slotOf(mp.base), rows: mp.rows.map(slotOf), width, out: slotOf(v), module,
        run: (...a) => (run ??= makeMap(module))(...a),
      })
    } else if (near) {
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
  const blocked = rowBlocked(steps, { program, def, stored, sides, env, slotVars, isOutput }, opts.blockRows, opts.threads, opts.wasm)
  const disposeAll = () => {
    dispose()
    for (const st of blocked) if (st.kind === 'rows') st.chain.dispose()
  }
  return { steps: blocked, slots: slotVars.length, inputSlots, outputSlots, slotVars, dispose: disposeAll }
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
  ownStep: ReadonlySet<number>,
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
      if (at >= k || !stored.has(id) || absorbed.has(id) || isInput.has(id) || STORED.has(d.prim) || ownStep.has(id)) continue
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

interface ChainContext {
  readonly program: Program
  readonly def: ReadonlyMap<number, Eqn>
  readonly stored: ReadonlySet<number>
  readonly sides: ReadonlyMap<number, Var[]>
  readonly env: EmitEnv & { slotOf(v: Var): number }
  readonly slotVars: readonly Var[]
  readonly isOutput: ReadonlySet<number>
}

/** Elements from which an exp runs as a WebAssembly map (smaller ones stay fused in their loop). */
const MAP_MIN_ELEMS = 1 << 16

/** An exp's argument as the map reads it: a stored base, float32 ops, per-row operands. */
interface MappedExp {
  readonly base: Var
  readonly rows: readonly Var[]
  readonly ops: readonly ProOp[]
}

const PRO_OPS: ReadonlySet<Prim> = new Set<Prim>(['add', 'sub', 'mul', 'div'])

/**
 * The argument `arg` of an exp as a stored base of the same shape followed by float32
 * add/sub/mul/div/neg ops whose other operand is a scalar literal or a per-row value (a stored value
 * with one element per row of the last axis, broadcast along it), or undefined when it has
 * another form. Per-row operands need rows of whole map steps that fit one map call.
 */
function prologueOf(arg: Var, def: (v: Var) => Eqn | undefined, isStored: (v: Var) => boolean): MappedExp | undefined {
  const shape = arg.aval.shape
  const width = shape[shape.length - 1] ?? 1
  const sameShape = (v: Var) => v.aval.shape.length === shape.length && v.aval.shape.every((d, i) => d === shape[i])
  /** Through movement ops that keep a single value. */
  const literal = (v: Var): number | undefined => {
    const e = def(v)
    if (!e || v.aval.dtype !== 'float32') return undefined
    if (e.prim === 'full') return Math.fround(e.params.value)
    if (e.prim === 'constant') return e.params.data.length === 1 ? Math.fround(Number(e.params.data[0])) : undefined
    if (e.prim === 'broadcast' || e.prim === 'reshape' || e.prim === 'stop_gradient') return literal(e.inputs[0]!)
    return undefined
  }
  /** A stored value with one element per row (in row order), broadcast along the last axis. */
  const perRow = (v: Var): Var | undefined => {
    const e = def(v)
    if (e?.prim !== 'broadcast' || !sameShape(v) || width % MAP_STEP !== 0 || width > MAP_CHUNK) return undefined
    let u = e.inputs[0]!
    const rowsN = shape.slice(0, -1).reduce((a, b) => a * b, 1)
    const us = u.aval.shape
    if (us.length !== shape.length || us[us.length - 1] !== 1 || !us.slice(0, -1).every((d, i) => d === shape[i])) return undefined
    for (;;) {
      if (isStored(u)) return u.aval.dtype === 'float32' && u.aval.shape.reduce((a, b) => a * b, 1) === rowsN ? u : undefined
      const d = def(u)
      if (d?.prim !== 'reshape' && d?.prim !== 'stop_gradient') return undefined
      u = d.inputs[0]!
    }
  }
  const rows: Var[] = []
  const operand = (v: Var): { lit: number } | { row: number } | undefined => {
    const lit = literal(v)
    if (lit !== undefined) return { lit }
    const r = perRow(v)
    if (!r) return undefined
    const k = rows.indexOf(r)
    if (k >= 0) return { row: k }
    rows.push(r)
    return { row: rows.length - 1 }
  }
  let v = arg
  const pending: ProOp[] = []
  while (!(isStored(v) && sameShape(v))) {
    const e = def(v)
    if (e?.prim === 'neg' && v.aval.dtype === 'float32') {
      // -x is x * -1 bit for bit (signed zeros and NaN included)
      pending.push({ op: 'mul', swapped: false, lit: -1 })
      v = e.inputs[0]!
      continue
    }
    if (!e || !PRO_OPS.has(e.prim) || v.aval.dtype !== 'float32') return undefined
    const [a, b] = e.inputs as [Var, Var]
    const ob = operand(b)
    if (ob && sameShape(a)) {
      pending.push({ op: e.prim as ProOp['op'], swapped: false, ...ob })
      v = a
      continue
    }
    const oa = operand(a)
    if (oa && sameShape(b)) {
      pending.push({ op: e.prim as ProOp['op'], swapped: true, ...oa })
      v = b
      continue
    }
    return undefined
  }
  if (v.aval.dtype !== 'float32') return undefined
  // walked from the exp down: the base's first op is the last found
  return { base: v, rows, ops: pending.reverse() }
}

/** Intermediates at least this large (elements) make a row-blocked chain worth forming. */
const CHAIN_MIN_ELEMS = 1 << 20
/** Elements of the widest row value per block (128 KiB of float32). */
const BLOCK_ELEMS = 32768
/** Elements (rows x widest row) from which a heavy chain is shared with worker threads. */
const THREAD_MIN_ELEMS = 1 << 18

const ROW_SAFE: ReadonlySet<Prim> = new Set<Prim>([
  'neg', 'exp', 'log', 'sqrt', 'tanh', 'atanh', 'abs', 'sign', 'floor', 'round', 'recip', 'cast', 'stop_gradient',
  'add', 'sub', 'mul', 'div', 'idiv', 'mod', 'pow', 'max', 'min', 'lt', 'le', 'eq', 'where',
])

/**
 * How a step reads memory when run on a block of rows of a leading axis of size n: the slots it
 * reads row by row (row i of the step from row i of the slot), the slots it reads whole, and the
 * slots it writes (row-indexed). Undefined when the step's value at row i depends on other rows
 * (or on the row number itself, as iota along axis 0 does).
 */
interface Access {
  readonly rowReads: Set<number>
  readonly wholeReads: Set<number>
  readonly writes: readonly number[]
  readonly sink: boolean
}

function accessOf(st: Step, n: number, cx: ChainContext): Access | undefined {
  const rowReads = new Set<number>(), wholeReads = new Set<number>()
  const isRow = (v: Var) => v.aval.shape.length >= 1 && v.aval.shape[0] === n
  // walks the fused expression of `v`; `selves` are computed by the step itself (never leaves)
  const walk = (v: Var, row: boolean, selves: ReadonlySet<number>): boolean => {
    if (cx.stored.has(v.id) && !selves.has(v.id)) {
      const s = cx.env.slotOf(v)
      ;(row ? rowReads : wholeReads).add(s)
      return true
    }
    const e = cx.def.get(v.id)
    if (!e) return false
    if (!row) return e.inputs.every((u) => walk(u, false, selves))
    if (!isRow(v)) return false
    switch (e.prim) {
      case 'iota': return e.params.axis !== 0
      case 'full': return true
      case 'broadcast': {
        const u = e.inputs[0]!
        if (u.aval.shape.length === v.aval.shape.length && u.aval.shape[0] === n) return walk(u, true, selves)
        if (u.aval.shape.length < v.aval.shape.length || u.aval.shape[0] === 1) return walk(u, false, selves)
        return false
      }
      case 'reshape': return isRow(e.inputs[0]!) && walk(e.inputs[0]!, true, selves)
      case 'transpose': return e.params.perm[0] === 0 && walk(e.inputs[0]!, true, selves)
      case 'slice': return e.params.start[0] === 0 && e.params.step[0] === 1 && isRow(e.inputs[0]!) && walk(e.inputs[0]!, true, selves)
      default:
        if (!ROW_SAFE.has(e.prim)) return false
        return e.inputs.every((u) => u.aval.shape.length === v.aval.shape.length && isRow(u) && walk(u, true, selves))
    }
  }
  switch (st.kind) {
    case 'kernel': {
      const out = cx.slotVars[st.out]!
      const e = cx.def.get(out.id)!
      if (REDUCTIONS.has(e.prim)) {
        const src = e.inputs[0]!
        if (!isRow(src)) return undefined
        const axes = e.prim === 'argmin' || e.prim === 'argmax' ? [e.params.axis] : (e.params as { axes: readonly number[] }).axes
        const side = cx.sides.get(out.id) ?? []
        const selves = new Set(side.map((v) => v.id))
        if (axes.includes(0)) {
          const sorted = [...axes].sort((a, b) => a - b)
          if (e.prim !== 'reduce_sum' || side.length > 0 || !sorted.every((a, i) => a === i)) return undefined
          return walk(src, true, selves) ? { rowReads, wholeReads, writes: [], sink: true } : undefined
        }
        if (!walk(src, true, selves) || !side.every((v) => walk(v, true, selves))) return undefined
        return { rowReads, wholeReads, writes: [st.out, ...(st.sideOuts ?? [])], sink: false }
      }
      if (!isRow(out) || !walk(out, true, new Set([out.id]))) return undefined
      return { rowReads, wholeReads, writes: [st.out], sink: false }
    }
    case 'matmul': {
      const [batch, m] = st.dims
      if (batch !== 1 || m !== n || cx.slotVars[st.a]!.aval.shape.length !== 2) return undefined
      rowReads.add(st.a)
      wholeReads.add(st.b)
      return { rowReads, wholeReads, writes: [st.out], sink: false }
    }
    case 'map': {
      const v = cx.slotVars[st.in]!, out = cx.slotVars[st.out]!
      if (!isRow(v) || out.aval.shape.length < 2 || !st.rows.every((s) => cx.slotVars[s]!.aval.shape[0] === n)) return undefined
      rowReads.add(st.in)
      st.rows.forEach((s) => rowReads.add(s))
      return { rowReads, wholeReads, writes: [st.out], sink: false }
    }
    default:
      return undefined
  }
}

/**
 * Finds one chain of steps over a leading axis (that of the first large row-indexed value) and
 * replaces them by a 'rows' step. Steps that cannot join run after the chain, in their order;
 * a step joins only if it reads nothing such a deferred step writes, nothing a sink of the
 * chain has not finished, and reads no chain-written slot whole.
 */
function rowBlocked(steps: Step[], cx: ChainContext, forcedRows: number | undefined, threads: number, wasm: boolean): Step[] {
  const sizeOf = (s: number) => cx.slotVars[s]!.aval.shape.reduce((a, b) => a * b, 1)
  // the leading axis of the largest value a kernel or matmul writes
  let first: number | undefined
  for (const st of steps) {
    if (st.kind !== 'kernel' && st.kind !== 'matmul' && st.kind !== 'map') continue
    for (const s of outsOf(st)) {
      if (cx.slotVars[s]!.aval.shape.length === 0) continue
      if (first === undefined || sizeOf(s) > sizeOf(first)) first = s
    }
  }
  const worth = threads > 1 ? Math.min(CHAIN_MIN_ELEMS, THREAD_MIN_ELEMS) : CHAIN_MIN_ELEMS
  if (first === undefined || (forcedRows === undefined && sizeOf(first) < worth)) return steps
  const n = cx.slotVars[first]!.aval.shape[0]!
  const chain: { st: Step; acc: Access }[] = []
  const pre: Step[] = [], rest: Step[] = []
  const written = new Set<number>() // row slots written by chain steps
  const sinkOuts = new Set<number>()
  const deferredOuts = new Set<number>()
  const rowRead = new Set<number>(), wholeRead = new Set<number>()
  for (const st of steps) {
    const acc = accessOf(st, n, cx)
    const reads = acc ? [...acc.rowReads, ...acc.wholeReads] : []
    const ok = acc !== undefined &&
      reads.every((s) => !deferredOuts.has(s) && !sinkOuts.has(s)) &&
      [...acc.wholeReads].every((s) => !written.has(s) && !rowRead.has(s)) &&
      [...acc.rowReads].every((s) => !wholeRead.has(s))
    if (!ok) {
      // a step that reads nothing the chain (or a step deferred after it) writes runs before it
      const independent = readsOf(st, cx).every((s) => !written.has(s) && !sinkOuts.has(s) && !deferredOuts.has(s))
      if (chain.length === 0 || independent) pre.push(st)
      else {
        rest.push(st)
        outsOf(st).forEach((s) => deferredOuts.add(s))
      }
      continue
    }
    chain.push({ st, acc })
    acc.writes.forEach((s) => written.add(s))
    acc.rowReads.forEach((s) => rowRead.add(s))
    acc.wholeReads.forEach((s) => wholeRead.add(s))
    if (acc.sink) sinkOuts.add(st.kind === 'kernel' ? st.out : -1)
  }
  // slots read by a deferred step, and program outputs, must be whole
  const readLater = new Set<number>()
  for (const st of rest) readsOf(st, cx).forEach((s) => readLater.add(s))
  const local = [...written].filter((s) => !readLater.has(s) && !cx.isOutput.has(cx.slotVars[s]!.id))
  if (chain.length === 0) return steps
  const rowElems = (s: number) => sizeOf(s) / n
  const widest = Math.max(...[...written, ...rowRead].map(rowElems), 1)
  const rows = Math.max(1, Math.min(n, forcedRows ?? Math.floor(BLOCK_ELEMS / widest)))
  const chainSteps = chain.map(({ st, acc }) => blockedStep(st, acc, cx, wasm ? rows : 0))
  const localSet = new Set(local)
  const full = [...written].filter((s) => !localSet.has(s))
  const views = [...new Set([...rowRead, ...written])].filter((s) => !localSet.has(s))
  const sinks = chainSteps.filter((c) => c.sink)
  const desc: ChainDesc = {
    n,
    rows,
    steps: chainSteps.map((c) => c.desc),
    views: views.map((s) => [s, rowElems(s)] as const),
    locals: local.map((s) => [s, cx.slotVars[s]!.aval.dtype, rowElems(s)] as const),
  }
  const compiled = compileChain(desc)
  const blocks = Math.ceil(n / rows)
  // threads pay for themselves on heavy loops (transcendentals, matmuls) over many elements
  const heavy = desc.steps.some((st) => st.kind === 'matmul' || st.kind === 'map' || callsTranscendental(st.source))
  const workers = threads > 1 && blocks > 1 && heavy && n * widest >= THREAD_MIN_ELEMS ? threads - 1 : 0
  // a chain pays when it keeps a large intermediate out of memory, or when threads share it
  if (forcedRows === undefined && local.every((s) => sizeOf(s) < CHAIN_MIN_ELEMS) && workers === 0) return steps
  let pool: ChainThreads | null | undefined
  let callerBlocks = 0
  // SharedArrayBuffer copies of the slots threads touch, kept between calls
  const shared = new Map<number, AnyTypedArray>()
  const sharedOf = (s: number): AnyTypedArray => {
    let a = shared.get(s)
    if (!a) {
      const v = cx.slotVars[s]!
      const len = sizeOf(s)
      const bytes = v.aval.dtype === 'bool' ? 1 : 4
      const buf = new SharedArrayBuffer(len * bytes)
      a = v.aval.dtype === 'float32' ? new Float32Array(buf) : v.aval.dtype === 'int32' ? new Int32Array(buf) : new Uint8Array(buf)
      shared.set(s, a)
    }
    return a
  }
  const touched = [...new Set([...views, ...wholeRead])]
  const run = (B: AnyTypedArray[], alloc: (slot: number) => AnyTypedArray): void => {
    if (workers > 0 && pool === undefined) {
      try {
        pool = new ChainThreads(desc, workers)
      } catch {
        pool = null // no worker threads here: the calling thread runs every block
      }
    }
    if (!pool) {
      for (const s of full) B[s] = alloc(s)
      const accs = sinks.map((c) => new Float64Array(sizeOf(c.out)))
      callerBlocks = runBlocks(compiled, B, accs, new Int32Array(CTRL_WORDS))
      finishSinks(B, accs, alloc)
      return
    }
    const Bs: (AnyTypedArray | undefined)[] = new Array(B.length).fill(undefined)
    const writtenSet = new Set(full)
    for (const s of touched) {
      const a = B[s]
      if (!writtenSet.has(s) && a && a.buffer instanceof SharedArrayBuffer) Bs[s] = a
      else {
        const sh = sharedOf(s)
        if (!writtenSet.has(s)) sh.set(a as never)
        Bs[s] = sh
      }
    }
    const accs = sinks.map((c) => new Float64Array(new SharedArrayBuffer(8 * sizeOf(c.out))))
    const ctrl = new Int32Array(new SharedArrayBuffer(4 * CTRL_WORDS))
    pool.post(Bs, accs, ctrl)
    callerBlocks = runBlocks(compiled, Bs as AnyTypedArray[], accs, ctrl)
    awaitBlocks(ctrl, blocks)
    for (const s of full) {
      // outputs are fresh, unshared arrays (callers own them); other values stay in the shared copy
      if (cx.isOutput.has(cx.slotVars[s]!.id)) {
        const out = alloc(s)
        out.set(Bs[s] as never)
        B[s] = out
      } else B[s] = Bs[s]!
    }
    finishSinks(B, accs, alloc)
  }
  const finishSinks = (B: AnyTypedArray[], accs: readonly Float64Array[], alloc: (slot: number) => AnyTypedArray) =>
    sinks.forEach((c, i) => {
      const out = alloc(c.out)
      out.set(accs[i]!)
      B[c.out] = out
    })
  const rowsStep: Step = {
    kind: 'rows',
    chain: {
      n, rows, threads: workers + 1, desc, steps: chain.map((c) => c.st), fullSlots: [...new Set([...full, ...views])], localSlots: local, run,
      dispose: () => pool?.dispose(),
      get callerBlocks() {
        return callerBlocks
      },
    },
  }
  return [...pre, rowsStep, ...rest]
}

interface BlockedStep {
  readonly out: number
  readonly sink: boolean
  readonly desc: ChainStepDesc
}

/** `wasmRows`: rows per block when matmuls may use the WebAssembly small-k kernel (0: they may not). */
function blockedStep(st: Step, acc: Access, cx: ChainContext, wasmRows: number): BlockedStep {
  if (st.kind === 'matmul') {
    const [, , k, n] = st.dims
    const desc: ChainStepDesc = { kind: 'matmul', a: st.a, b: st.b, out: st.out, k, n }
    if (wasmRows > 0 && smallKFits(k, n)) {
      const layout = smallKLayout(k, n, wasmRows)
      return { out: st.out, sink: false, desc: { ...desc, wasm: { module: smallKModule(layout), layout } } }
    }
    return { out: st.out, sink: false, desc }
  }
  if (st.kind === 'map') {
    // a block of rows of the leading axis: every map row (of `width`) lies inside one block
    const perRow = cx.slotVars[st.in]!.aval.shape.slice(1).reduce((a, b) => a * b, 1)
    const desc: ChainStepDesc = { kind: 'map', in: st.in, rows: st.rows, out: st.out, perRow, width: st.width, module: st.module }
    return { out: st.out, sink: false, desc }
  }
  if (st.kind !== 'kernel') throw new Error('fast backend: only kernels, matmuls and maps join a row chain')
  const v = cx.slotVars[st.out]!
  const e = cx.def.get(v.id)!
  const kernel = acc.sink
    ? sinkKernel(e, cx.env)
    : REDUCTIONS.has(e.prim)
      ? reduceKernel(e, cx.env, cx.sides.get(v.id) ?? [], true)
      : elementwiseKernel(v, cx.env, true)
  return { out: st.out, sink: acc.sink, desc: { kind: 'kernel', source: kernel.source, sink: acc.sink } }
}

function outsOf(st: Step): number[] {
  switch (st.kind) {
    case 'kernel': return [st.out, ...(st.sideOuts ?? [])]
    case 'rows': return []
    default: return [st.out]
  }
}

/** Slots a step reads (kernel headers bind exactly these; matmul, reference and nearest name theirs). */
function readsOf(st: Step, cx: ChainContext): number[] {
  switch (st.kind) {
    case 'kernel': return [...usedSlots(st.kernel.source)]
    case 'matmul': return [st.a, st.b]
    case 'reference': return [...st.ins]
    case 'map': return [st.in, ...st.rows]
    case 'nearest': return cx.slotVars.map((_, i) => i)
    case 'rows': return []
  }
}

function usedSlots(source: string): Set<number> {
  const out = new Set<number>()
  for (const m of source.matchAll(/^const b(\d+) = B\[\d+\];$/gm)) out.add(Number(m[1]))
  return out
}
