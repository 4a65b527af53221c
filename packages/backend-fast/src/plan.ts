import { TesseraError } from '@tessera/core'
import type { ChainStep, Eqn, LoopStep, NearestPattern, Prim, Program, RowChain, Var } from '@tessera/core'
import { ValueFacts, nearestDims, readReturnedSelections, scheduleLoops } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import type { ChainStepDesc } from './chain-runner.js'
import type { GeneratedKernel } from './loops.js'
import { elementwiseKernel, reduceKernel, sinkKernel } from './loops.js'
import { NearestStep, defaultTuning } from './nearest.js'
import { NO_ROW_SQUARES, rowSquareFolds } from './nearest-terms.js'
import type { GemmRunner } from './wasm/gemm.js'
import { foldGemmTransposes } from './gemm-rewrite.js'
import { NO_GEMMS, planGemms } from './gemm-plan.js'
import type { ElemExpr, ElemGroup, ElemRun, GatheredRead } from './wasm/elementwise.js'
import { elementwiseExpr, elementwiseSet, elementwiseTree, groupElementwise, groupReads, substitute } from './wasm/elementwise.js'
import { ROW_SUM_MAX, elementwiseLayout, heavyGroup } from './wasm/elem-kernel.js'
import { threadedElementwise, threadedFits } from './wasm/elem-threads.js'
import { ProgramCalls } from './wasm/threads.js'
import type { WorkerPool } from './wasm/threads.js'
import { shareScratch, stepReads, stepWrites } from './scratch-sharing.js'
import { fusedGathers } from './gather-fusion.js'
import type { RowChainRun } from './row-chain.js'
import { makeRowChain } from './row-chain.js'
import { wasmChainLayout } from './wasm/chain-codegen.js'
import { wasmRowChain } from './wasm/chain-run.js'
import type { MapModule, MathMap } from './wasm/mathmap.js'
import { MAP_CHUNK, MAP_STEP, mathMapFactory, mathMapModule } from './wasm/mathmap.js'
import { smallKFits, smallKLayout, smallKModule } from './wasm/smallk.js'
import { NO_FOLDS, probeFolds, scanStep } from './scan-steps.js'
import { gatherSteps } from './gather-step.js'
import { matchOneHotCounts, matchOneHotProduct, oneHotCountsKernel, oneHotProductKernel } from './one-hot.js'
import type { ReduceScan } from './wasm/reduce-scan.js'
import { reduceScan } from './wasm/reduce-scan.js'

/** One step of an executable plan: core's schedule step with its generated code. */
export type Step =
  | { readonly kind: 'kernel'; readonly out: number; readonly kernel: GeneratedKernel; readonly prim: Prim; readonly sideOuts?: readonly number[] }
  | {
      readonly kind: 'matmul'
      readonly out: number
      readonly a: number
      readonly b: number
      readonly dims: readonly [number, number, number, number]
      /** The WebAssembly float32 GEMM (operands maybe stored transposed); absent: the float64-exact JS matmul. */
      readonly gemm?: GemmRunner
    }
  | { readonly kind: 'reference'; readonly out: number; readonly eqn: Eqn; readonly ins: readonly number[] }
  /** Float32 elementwise loops of one size as one WebAssembly SIMD pass (wasm/elementwise.ts). */
  | { readonly kind: 'elem'; readonly outs: readonly number[]; readonly run: ElemRun }
  | { readonly kind: 'nearest'; readonly out: number; readonly step: NearestStep }
  | { readonly kind: 'rows'; readonly chain: RowChainRun }
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

export interface Plan {
  readonly steps: readonly Step[]
  readonly slots: number
  /** Slot of each program input and output. */
  readonly inputSlots: readonly number[]
  readonly outputSlots: readonly number[]
  /** Variable (aval) stored in each slot. */
  readonly slotVars: readonly Var[]
  /** Per slot, the intermediate buffer it takes turns on with other slots (scratch-sharing.ts), or -1: a buffer of its own. */
  readonly scratchOf: readonly number[]
  /** The program's calls: the executable marks the start of each (kernels start their workers after the first). */
  readonly calls: ProgramCalls
  /** Release worker threads held by kernels; resolves once they have exited. */
  dispose(): Promise<void>
}

export interface PlanOptions {
  /** Run the patterns core recognizes (nearest-code search, exp maps, small-k matmuls) as WebAssembly SIMD kernels. */
  readonly wasm: boolean
  /** Threads the WebAssembly kernels and heavy row chains may use, counting the calling thread. */
  readonly threads: number
  /** The backend's worker threads, shared by the plan's threaded kernels (without it each kernel starts its own). */
  readonly workers?: WorkerPool
  /**
   * Rows per block of a row-blocked chain. Default: chains are formed only when an intermediate
   * they keep out of memory has at least 2^20 elements, with blocks of about 32K elements of the
   * widest row. A number forces chains of any size with that many rows per block (tests).
   */
  readonly blockRows?: number
  /** Fused multiply-adds (relaxed SIMD) in the nearest-code kernel and the dense GEMM; the engine must support them. */
  readonly relaxedSimd?: boolean
  /** Row chains as one WebAssembly module each where possible (default true with `wasm`; false keeps the JS kernels per member). */
  readonly wasmChains?: boolean
  /** Multiply-adds (m·k·n) from which a matmul runs as the float32 WebAssembly GEMM (default GEMM_MIN_MACS; tests pass 0). */
  readonly gemmMinMacs?: number
  /** Screen nearest-code searches in int16 before float32 (default true where the pattern allows; same indices). */
  readonly nearestScreen?: boolean
  /** Elementwise passes gather rows of gathers only they read, which are then not stored (default true; same bits). */
  readonly gatherInPasses?: boolean
}

/** Dot-product length from which nearest-code searches are screened in int16 (shorter ones gain too little over the epilogue). */
const SCREEN_MIN_K = 16

/**
 * Multiply-adds from which a matmul with k > 16 takes the float32 GEMM kernel (below it, and for
 * the small-k products of logits, the float64-exact JS loops are as fast).
 */
const GEMM_MIN_MACS = 1 << 15

/**
 * Multiply-adds of a program's nearest-code searches from which their worker threads start within
 * the first call (fewer: after it, see NearestStep.run): a worker takes tens of milliseconds to
 * start, which a first call this long repays and a shorter one does not (docs/BACKENDS.md).
 */
const WORKERS_IN_FIRST_CALL_MACS = 2 ** 32

/** Elements from which a float32 elementwise loop in wasm/elementwise.ts's subset runs as WebAssembly. */
const ELEM_MIN = 1 << 12
/** Most memory an elementwise pass may take to gather its own operands (their tables are copied in whole). */
const GATHERING_PASS_MAX_BYTES = 1 << 24

/** Elements from which an exp runs as a WebAssembly map (smaller ones stay fused in their loop). */
const MAP_MIN_ELEMS = 1 << 16

/**
 * Sizes of row chains on this backend: chains from 2^20-element intermediates, blocks of 128 KiB
 * of float32 in the widest row value (they stay in L2), threads from 2^18 elements of heavy work.
 */
const ROWS = { chainMinElems: 1 << 20, blockElems: 32768, threadMinElems: 1 << 18 }

/**
 * Generates code for core's loop schedule of a program: JS loops for fused loops and reductions
 * (WebAssembly for large float32 elementwise loops), a float64-exact matmul (a float32
 * WebAssembly GEMM for dense ones), the WebAssembly nearest-code kernel and exp map, row chains run block
 * by block (on worker threads when heavy), row copies for gathers of whole rows, and the
 * reference evaluator for the other data movement.
 */
export function planProgram(program0: Program, opts: PlanOptions): Plan {
  // exact rewrites so dense products and their gradients need no transposed copies (they fold
  // transposes only: a program without one is left as it is, and its first compile skips their code)
  const folded = program0.eqns.some((e) => e.prim === 'transpose') ? foldGemmTransposes(program0) : program0
  // a returned value a selection reads too (VectorQuantize's distances) is computed once
  const program = readReturnedSelections(folded)
  const schedule = scheduleLoops(program, {
    nearest: opts.wasm,
    ...(opts.wasm ? { expMap: { minElems: MAP_MIN_ELEMS, step: MAP_STEP, maxWidth: MAP_CHUNK } } : {}),
    rows: { ...ROWS, threads: opts.threads, ...(opts.blockRows !== undefined ? { forcedRows: opts.blockRows } : {}) },
  })
  const { graph, stored } = schedule
  // counted by the executable: kernels start their worker threads after the first (LateWorkers)
  const calls = new ProgramCalls()
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
    facts: new ValueFacts((v) => graph.def(v)),
    def: (v) => graph.def(v),
    bufName: (v) => (stored.has(v.id) ? `b${slotOf(v)}` : undefined),
    slotOf,
  }
  const makeMap = mathMapFactory()
  // loops written for the training step's repeated scans (finite probe, bias gradients); the WebAssembly scans on first use
  const scanEnv = { def: (v: Var) => graph.def(v), isStored: (v: Var) => stored.has(v.id), slotOf }
  let scanKernels: ReduceScan | undefined
  const scans = () => (scanKernels ??= reduceScan())
  // (only an argmin can fold: without one the folding code is not run, nor compiled on a first call)
  const anyArgmin = schedule.steps.some((st) => st.kind === 'reduce' && st.eqn.prim === 'argmin')
  const folds = anyArgmin && opts.wasm
    ? probeFolds(schedule.steps, { ...scanEnv, uses: (v) => graph.uses(v).length, isOutput: (v) => graph.isOutput(v) }, scans)
    : NO_FOLDS
  // gathers of whole rows as copies into the step's buffer (one copy memory per plan)
  const gathers = gatherSteps(scanEnv, opts.wasm)
  /** Gathers an elementwise pass may do itself, by output slot (gather-fusion.ts). */
  const gatherAt = new Map<number, GatheredRead>()
  const nearest: NearestStep[] = []
  const macsOf = (p: NearestPattern) => {
    const { m, n, k } = nearestDims(p)
    return m * n * k
  }
  const searchMacs = schedule.steps.reduce((sum, st) => sum + (st.kind === 'nearest' ? macsOf(st.pattern) : 0), 0)
  const screened = (p: NearestPattern) => (opts.nearestScreen ?? true) && p.slope !== undefined && nearestDims(p).k >= SCREEN_MIN_K
  const chains: RowChainRun[] = []
  // matmuls taken by the GEMM kernel, and the transposes they read through (not materialized)
  // (a schedule without a top-level matmul step has none to pick: then the GEMM code is not run)
  const anyMatmul = schedule.steps.some((st) => st.kind === 'matmul')
  const gemms = opts.wasm && anyMatmul ? planGemms(schedule, opts.gemmMinMacs ?? GEMM_MIN_MACS, opts.threads, opts.relaxedSimd ?? false, undefined, opts.workers, calls) : NO_GEMMS
  // VectorQuantize's EMA sums and counts over a one-hot matrix, as scatter-adds (one-hot.ts); the
  // transposed one-hot a product reads, where nothing else does, is then not computed
  const oneHotG = { def: (v: Var) => graph.def(v), isStored: (v: Var) => stored.has(v.id) }
  const oneHotProducts = new Map<Eqn, NonNullable<ReturnType<typeof matchOneHotProduct>>>()
  for (const st of schedule.steps) {
    const m = st.kind === 'matmul' ? matchOneHotProduct(st.eqn, oneHotG) : undefined
    if (m) oneHotProducts.set((st as Extract<LoopStep, { kind: 'matmul' }>).eqn, m)
  }
  const oneHotDropped = new Set([...oneHotProducts.values()].flatMap((m) => (graph.uses(m.transposed).length === 1 && !graph.isOutput(m.transposed) ? [m.transposed.id] : [])))
  const oneHotStep = (st: LoopStep): Step | undefined => {
    if (st.kind === 'matmul') {
      const m = oneHotProducts.get(st.eqn)
      const out = slotOf(st.eqn.out)
      return m && { kind: 'kernel', out, kernel: oneHotProductKernel(slotOf(m.oneHot.idx), slotOf(m.x), out, m.oneHot.codes), prim: 'matmul' }
    }
    const c = st.kind === 'reduce' && st.sides.length === 0 ? matchOneHotCounts(st.eqn, oneHotG) : undefined
    if (!c) return undefined
    const out = slotOf((st as Extract<LoopStep, { kind: 'reduce' }>).eqn.out)
    return { kind: 'kernel', out, kernel: oneHotCountsKernel(slotOf(c.idx), out, c.codes), prim: 'reduce_sum' }
  }
  const elems = elementwiseSet()
  /** A WebAssembly loop for stored `v` where its expression is in the kernel's subset. */
  type Proto = Step | { readonly kind: 'elemExpr'; readonly out: number; readonly expr: ElemExpr; readonly n: number }
  /** A stored value's slot; `also` (a chain's values, when it is taken apart) counts as stored too. */
  const storedSlot = (also?: ReadonlySet<number>) => (x: Var) => (stored.has(x.id) || also?.has(x.id) ? slotOf(x) : undefined)
  const elemStep = (v: Var, also?: ReadonlySet<number>): Proto | undefined => {
    const n = v.aval.shape.reduce((a, b) => a * b, 1)
    if (!opts.wasm || n < ELEM_MIN) return undefined
    const e = elementwiseExpr(v, (x) => graph.def(x), storedSlot(also))
    return e && { kind: 'elemExpr', out: slotOf(v), expr: e, n }
  }
  /**
   * A stored value that is a reshape of another stored value (through stop_gradient too) of its
   * dtype: one TypedArray copy (a quantizer's x reshaped to (1, b·n, d) for its search) rather
   * than a loop.
   */
  const copyStep = (v: Var): Step | undefined => {
    let u = v
    do {
      const d = graph.def(u)
      if (!d || (d.prim !== 'reshape' && d.prim !== 'stop_gradient')) return undefined
      u = d.inputs[0]!
    } while (!stored.has(u.id))
    if (u.aval.dtype !== v.aval.dtype) return undefined
    const [from, to] = [slotOf(u), slotOf(v)]
    return { kind: 'kernel', out: to, prim: 'reshape', kernel: { source: `copy of b${from} into b${to}`, fn: (B) => (B[to] as Float32Array).set(B[from] as Float32Array) } }
  }
  const sideStep = (v: Var): Proto | undefined => elemStep(v) ?? copyStep(v)
  // |x|² row terms a screened search sums from its own rows (their stored sums are dropped)
  const squares = opts.wasm && schedule.steps.some((st) => st.kind === 'nearest')
    ? rowSquareFolds(schedule.steps, { def: (v) => graph.def(v), uses: (v) => graph.uses(v), isOutput: (v) => graph.isOutput(v) }, screened, (sides) => sides.every((v) => sideStep(v) !== undefined))
    : NO_ROW_SQUARES
  /**
   * A sum over trailing axes (at most ROW_SUM_MAX wide) of an elementwise operand, with its side
   * outputs, as one WebAssembly pass (FSQ's and LFQ's index sums with their codes).
   */
  const rowSumGroup = (st: Extract<LoopStep, { kind: 'reduce' }>, also?: ReadonlySet<number>): ElemGroup | undefined => {
    const { eqn } = st
    const src = eqn.inputs[0]!
    const shape = src.aval.shape
    const n = shape.reduce((a, b) => a * b, 1)
    if (!opts.wasm || eqn.prim !== 'reduce_sum' || n < ELEM_MIN || src.aval.dtype === 'bool') return undefined
    const axes = [...eqn.params.axes].sort((a, b) => a - b)
    if (axes.length === 0 || axes.some((a, i) => a !== shape.length - axes.length + i)) return undefined
    const width = axes.reduce((p, a) => p * shape[a]!, 1)
    if (width > ROW_SUM_MAX) return undefined
    const bufSlot = storedSlot(also)
    const sides = st.sides.map((v) => elementwiseExpr(v, (x) => graph.def(x), bufSlot))
    const term0 = elementwiseTree(src, (x) => graph.def(x), bufSlot)
    if (!term0 || sides.some((e) => e === undefined)) return undefined
    // the sides are computed in the same pass: reads of them (by the operand or each other) use their expressions
    const byOut = new Map(st.sides.map((v, i) => [slotOf(v), sides[i]!]))
    const exprs = sides.map((e) => substitute(e!, byOut))
    const outs = st.sides.map(slotOf)
    return { outs, exprs, n, rowSum: { out: slotOf(eqn.out), term: substitute(term0, byOut), width } }
  }
  const threadedElems: { dispose(): Promise<void> }[] = []
  const threaded = (g: ElemGroup) => opts.threads >= 2 && heavyGroup(g, ROWS.threadMinElems) && threadedFits(g, opts.threads)
  /**
   * A group's runner: heavy ones (tanh over 2^18 elements and more) on every thread; `gathered`,
   * the whole operands it gathers itself (only groups on the calling thread do).
   */
  const elemRun = (g: ElemGroup, gathered?: ReadonlyMap<number, GatheredRead>): ElemRun => {
    if (gathered?.size) return elems.add(g, gathered)
    if (!threaded(g)) return elems.add(g)
    // (its first call runs on this thread, as a group of the one-thread set: see threadedElementwise)
    const t = threadedElementwise(g, opts.threads, elems.add(g), opts.workers, calls)
    threadedElems.push(t)
    return t.run
  }
  const rowSumStep = (g: ElemGroup): Step => ({ kind: 'elem', outs: [...g.outs, g.rowSum!.out], run: elemRun(g) })
  /** Slots a step writes (undefined: not known here, a row chain). */
  const writesOf = (p: Proto): readonly number[] | undefined => (p.kind === 'elemExpr' ? [p.out] : stepWrites(p))
  /** A top-level step, its side outputs split off into WebAssembly loops where they all fit. */
  const topSteps = (st: LoopStep): Proto[] => {
    const oh = oneHotStep(st)
    if (oh) return [oh]
    const fold = folds.step(st)
    if (fold) return [{ kind: 'kernel', ...fold }]
    const sc = scanStep(st, scanEnv, opts.wasm ? scans : undefined)
    if (sc) return [{ kind: 'kernel', ...sc }]
    const ga = st.kind === 'host' ? gathers.step(st.eqn) : undefined
    if (ga) {
      if (ga.fused && opts.gatherInPasses !== false) gatherAt.set(ga.out, ga.fused)
      return [{ kind: 'kernel', out: ga.out, prim: ga.prim, kernel: ga.kernel }]
    }
    if (st.kind === 'loop') {
      const w = sideStep(st.out)
      if (w) return [w]
    }
    if (st.kind === 'reduce') {
      const g = rowSumGroup(st)
      if (g) return [rowSumStep(g)]
    }
    if (st.kind === 'reduce' && st.sides.length > 0) {
      const ws = st.sides.map((v) => sideStep(v))
      // the reduction then reads the sides from their buffers instead of computing them
      if (ws.every((w) => w !== undefined))
        return [...ws, { kind: 'kernel', ...(scanStep({ ...st, sides: [] }, scanEnv, opts.wasm ? scans : undefined) ?? { out: slotOf(st.eqn.out), kernel: reduceKernel(st.eqn, env, []), prim: st.eqn.prim }) }]
    }
    return [stepOf(st)]
  }

  const stepOf = (st: LoopStep): Step => {
    switch (st.kind) {
      case 'loop':
        return { kind: 'kernel', out: slotOf(st.out), kernel: elementwiseKernel(st.out, env), prim: graph.def(st.out)!.prim }
      case 'reduce':
        return { kind: 'kernel', out: slotOf(st.eqn.out), kernel: reduceKernel(st.eqn, env, st.sides), prim: st.eqn.prim, sideOuts: st.sides.map(slotOf) }
      case 'matmul': {
        const [a, b] = st.eqn.inputs
        const r = a.aval.shape.length
        const batch = a.aval.shape.slice(0, -2).reduce((x, y) => x * y, 1)
        const dims = [batch, a.aval.shape[r - 2]!, a.aval.shape[r - 1]!, b.aval.shape[r - 1]!] as const
        const g = gemms.of(st.eqn)
        if (g) return { kind: 'matmul', out: slotOf(st.eqn.out), a: slotOf(g.a), b: slotOf(g.b), dims, gemm: g.runner }
        return { kind: 'matmul', out: slotOf(st.eqn.out), a: slotOf(a), b: slotOf(b), dims }
      }
      case 'host':
        return { kind: 'reference', out: slotOf(st.eqn.out), eqn: st.eqn, ins: st.eqn.inputs.map(slotOf) }
      case 'nearest': {
        const screen = screened(st.pattern)
        const step = new NearestStep(st.pattern, opts.threads, { ...defaultTuning, relaxed: opts.relaxedSimd ?? false, screen }, squares.termsOf(st.pattern), opts.workers, { calls, atFirstCall: searchMacs >= WORKERS_IN_FIRST_CALL_MACS })
        step.prepare(env)
        nearest.push(step)
        return { kind: 'nearest', out: slotOf(st.pattern.select.out), step }
      }
      case 'expMap': {
        const { base, rows, ops } = st.pattern
        const module = mathMapModule({ ops, rowArrays: rows.length }, MAP_CHUNK)
        // the instance for a run outside a row chain (a chain makes one per thread from the module)
        let run: MathMap | undefined
        const width = st.out.aval.shape[st.out.aval.shape.length - 1] ?? 1
        return {
          kind: 'map', in: slotOf(base), rows: rows.map(slotOf), width, out: slotOf(st.out), module,
          run: (...a) => (run ??= makeMap(module))(...a),
        }
      }
    }
  }

  /** A chain member generated for a block of rows (a matmul may take the small-k WebAssembly kernel). */
  const blockedOf = (c: ChainStep, rows: number): { step: Step; desc: ChainStepDesc } => {
    const st = c.step
    switch (st.kind) {
      case 'matmul': {
        const step = stepOf(st) as Extract<Step, { kind: 'matmul' }>
        const [, , k, n] = step.dims
        const desc: ChainStepDesc = { kind: 'matmul', a: step.a, b: step.b, out: step.out, k, n }
        if (!opts.wasm || !smallKFits(k, n)) return { step, desc }
        const layout = smallKLayout(k, n, rows)
        return { step, desc: { ...desc, wasm: { module: smallKModule(layout), layout } } }
      }
      case 'expMap': {
        const step = stepOf(st) as Extract<Step, { kind: 'map' }>
        // a block of rows of the leading axis: every map row (of `width`) lies inside one block
        const perRow = st.pattern.base.aval.shape.slice(1).reduce((a, b) => a * b, 1)
        return { step, desc: { kind: 'map', in: step.in, rows: step.rows, out: step.out, perRow, width: step.width, module: step.module } }
      }
      case 'loop': case 'reduce': {
        const out = st.kind === 'loop' ? st.out : st.eqn.out
        const sides = st.kind === 'reduce' ? st.sides : []
        const kernel = c.sink
          ? sinkKernel((st as Extract<LoopStep, { kind: 'reduce' }>).eqn, env)
          : st.kind === 'reduce' ? reduceKernel(st.eqn, env, sides, true) : elementwiseKernel(st.out, env, true)
        const step: Step = { kind: 'kernel', out: slotOf(out), kernel, prim: graph.def(out)!.prim, sideOuts: sides.map(slotOf) }
        return { step, desc: { kind: 'kernel', source: kernel.source, sink: c.sink } }
      }
      default:
        throw new TesseraError('backend', 'fast.plan', `a ${st.kind} step cannot join a row chain`)
    }
  }

  /** One WebAssembly module for the whole chain where every step has a form there. */
  const wasmChainOf = (rc: RowChain): Step[] | undefined => {
    const layout = opts.wasm && opts.wasmChains !== false ? wasmChainLayout(rc, { def: (v) => graph.def(v), isStored: (v) => stored.has(v.id) }, rc.workers + 1) : undefined
    if (!layout) return undefined
    const chain = wasmRowChain(layout, slotOf, opts.workers, calls)
    chains.push(chain)
    return [{ kind: 'rows', chain }]
  }
  /** The chain's members as JS kernels run block by block. */
  const chainOf = (rc: RowChain): Step => {
    const chain = makeRowChain(rc, rc.steps.map((c) => blockedOf(c, rc.rows)), slotOf, (v) => graph.isOutput(v), calls)
    chains.push(chain)
    return { kind: 'rows', chain }
  }

  /**
   * A chain without sinks whose every step runs as a WebAssembly pass on its own (FSQ's forward
   * on several threads): those passes, which beat the JS chain's threads; its chain-local values
   * (FSQ's index sums, 1/width of the codes) are stored whole instead, so only where they are no
   * larger than what the chain writes whole (a chain formed to keep a large value out of memory stays).
   */
  const unchained = (rc: RowChain): Proto[] | undefined => {
    const elems = (vs: readonly Var[]) => vs.reduce((a, v) => a + v.aval.shape.reduce((x, y) => x * y, 1), 0)
    if (!opts.wasm || rc.steps.some((c) => c.sink) || elems(rc.local) > elems(rc.full)) return undefined
    const local = new Set(rc.local.map((v) => v.id))
    const out: (Proto | ElemGroup)[] = []
    for (const { step: st } of rc.steps) {
      const p = st.kind === 'loop' ? elemStep(st.out, local) : st.kind === 'reduce' ? rowSumGroup(st, local) : undefined
      if (!p) return undefined
      out.push(p)
    }
    return out.map((p) => ('kind' in p ? p : rowSumStep(p)))
  }
  const protos = schedule.steps
    .filter((st) => !gemms.dropped(st) && !folds.dropped(st) && !(st.kind === 'loop' && oneHotDropped.has(st.out.id)))
    // a |x|² the search sums itself: only its side outputs are left to compute
    .flatMap((st): Proto[] => (squares.dropped(st) ? (st as Extract<LoopStep, { kind: 'reduce' }>).sides.map((v) => sideStep(v)!) : st.kind === 'rows' ? (wasmChainOf(st) ?? unchained(st) ?? [chainOf(st)]) : topSteps(st)))
  // elementwise loops of one size merge into one pass where the order allows (Adam's per parameter)
  const grouped = groupElementwise(protos, writesOf, (p) => (p.kind === 'elemExpr' ? p : undefined))
  const isGroup = (x: Proto | ElemGroup): x is ElemGroup => 'exprs' in x
  const outputSlots = program.outputs.map(slotOf)
  const inputIds = new Set(program.inputs.map((v) => v.id))
  const scratchGraph = { def: (v: Var) => graph.def(v), isInput: (v: Var) => inputIds.has(v.id), slotOf: (v: Var) => slotOfId.get(v.id) }
  // gathers whose every reader is a pass that can gather the rows itself are not stored
  const fused = new Map<number, GatheredRead>()
  if (gatherAt.size > 0) {
    const noRun: ElemRun = () => undefined
    const reads = stepReads(grouped.map((x) => (isGroup(x) ? { kind: 'elem', outs: x.outs, run: noRun } : (x as Step))), slotVars, scratchGraph)
    const fits = (g: ElemGroup, gathered: ReadonlyMap<number, GatheredRead>) => !threaded(g) && elementwiseLayout(g, 1, gathered).bytes <= GATHERING_PASS_MAX_BYTES
    for (const [s, r] of fusedGathers(grouped, isGroup, (i) => reads[i]!, gatherAt, new Set(outputSlots), fits)) fused.set(s, r)
  }
  const gatheredBy = (g: ElemGroup) => new Map(groupReads(g).whole.filter((s) => fused.has(s)).map((s) => [s, fused.get(s)!]))
  const steps: Step[] = grouped
    .filter((x) => isGroup(x) || !(x.kind === 'kernel' && fused.has(x.out)))
    .map((g) => (isGroup(g) ? { kind: 'elem', outs: g.outs, run: elemRun(g, gatheredBy(g)) } : (g as Step)))
  const scratchOf = shareScratch(steps, slotVars, new Set([...inputSlots, ...outputSlots]), scratchGraph)
  const dispose = async () => {
    await Promise.all([...nearest.map((n) => n.dispose()), ...chains.map((c) => c.dispose()), ...threadedElems.map((t) => t.dispose()), gemms.dispose()])
  }
  return { steps, slots: slotVars.length, inputSlots, outputSlots, slotVars, scratchOf, calls, dispose }
}
