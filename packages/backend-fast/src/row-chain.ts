import type { AnyTypedArray, RowChain, Var } from '@tessera/core'
import type { ChainDesc, ChainStepDesc } from './chain-runner.js'
import { CTRL_WORDS, ChainThreads, awaitBlocks, compileChain, runBlocks } from './chain-runner.js'
import type { Step } from './plan.js'
import type { ProgramCalls } from './wasm/threads.js'
import { LateWorkers } from './wasm/threads.js'

/** A row chain ready to run: core's chain with its members' generated code, and its threads. */
export interface RowChainRun {
  /** Rows of the leading axis, and rows per block. */
  readonly n: number
  readonly rows: number
  /** The chain's members in order (kernels generated for a block of `R` rows). */
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
  dispose(): Promise<void>
  /** Blocks the calling thread ran in the last call (the rest ran on worker threads). */
  readonly callerBlocks: number
  /** Whether the chain's worker threads have been started (LateWorkers: not in the program's first call). */
  readonly workersStarted: boolean
  /** Generated JS kernels per member (this file), or one WebAssembly module for the chain (wasm/chain-codegen.ts). */
  readonly codegen: 'js' | 'wasm'
}

const elems = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)

export function makeRowChain(
  rc: RowChain,
  members: readonly { readonly step: Step; readonly desc: ChainStepDesc }[],
  slotOf: (v: Var) => number,
  isOutput: (v: Var) => boolean,
  calls?: ProgramCalls,
): RowChainRun {
  const { n, rows, workers } = rc
  const rowElems = (v: Var) => elems(v) / n
  const desc: ChainDesc = {
    n,
    rows,
    steps: members.map((m) => m.desc),
    views: rc.views.map((v) => [slotOf(v), rowElems(v)] as const),
    locals: rc.local.map((v) => [slotOf(v), v.aval.dtype, rowElems(v)] as const),
  }
  const compiled = compileChain(desc)
  const blocks = Math.ceil(n / rows)
  const full = rc.full.map(slotOf)
  const views = rc.views.map(slotOf)
  const varOf = new Map<number, Var>([...rc.views, ...rc.wholeReads, ...rc.full].map((v) => [slotOf(v), v]))
  const sinks = members.flatMap((m) => (m.desc.kind === 'kernel' && m.desc.sink && m.step.kind === 'kernel' ? [m.step.out] : []))
  const sinkSizes = rc.steps.flatMap((c) => (c.sink && c.step.kind === 'reduce' ? [elems(c.step.eqn.out)] : []))
  // started as every threaded kernel's workers are (LateWorkers): after the program's first call
  const late = workers > 0 ? new LateWorkers(() => new ChainThreads(desc, workers), calls) : undefined
  let callerBlocks = 0
  // SharedArrayBuffer copies of the slots threads touch, kept between calls
  const shared = new Map<number, AnyTypedArray>()
  const sharedOf = (s: number): AnyTypedArray => {
    let a = shared.get(s)
    if (!a) {
      const v = varOf.get(s)!
      const len = elems(v)
      const bytes = v.aval.dtype === 'bool' ? 1 : 4
      const buf = new SharedArrayBuffer(len * bytes)
      a = v.aval.dtype === 'float32' ? new Float32Array(buf) : v.aval.dtype === 'int32' ? new Int32Array(buf) : new Uint8Array(buf)
      shared.set(s, a)
    }
    return a
  }
  const touched = [...new Set([...views, ...rc.wholeReads.map(slotOf)])]
  const writtenSet = new Set(full)
  const outputs = new Set(rc.full.filter(isOutput).map(slotOf))
  const finishSinks = (B: AnyTypedArray[], accs: readonly Float64Array[], alloc: (slot: number) => AnyTypedArray) =>
    sinks.forEach((s, i) => {
      const out = alloc(s)
      out.set(accs[i]!)
      B[s] = out
    })
  const run = (B: AnyTypedArray[], alloc: (slot: number) => AnyTypedArray): void => {
    // undefined: the first call, or no worker threads here (the calling thread runs every block)
    const pool = late?.forCall()
    if (!pool) {
      for (const s of full) B[s] = alloc(s)
      const accs = sinkSizes.map((len) => new Float64Array(len))
      callerBlocks = runBlocks(compiled, B, accs, new Int32Array(CTRL_WORDS))
      finishSinks(B, accs, alloc)
      return
    }
    const Bs: (AnyTypedArray | undefined)[] = new Array(B.length).fill(undefined)
    for (const s of touched) {
      const a = B[s]
      if (!writtenSet.has(s) && a && a.buffer instanceof SharedArrayBuffer) Bs[s] = a
      else {
        const sh = sharedOf(s)
        if (!writtenSet.has(s)) sh.set(a as never)
        Bs[s] = sh
      }
    }
    const accs = sinkSizes.map((len) => new Float64Array(new SharedArrayBuffer(8 * len)))
    const ctrl = new Int32Array(new SharedArrayBuffer(4 * CTRL_WORDS))
    pool.post(Bs, accs, ctrl)
    callerBlocks = runBlocks(compiled, Bs as AnyTypedArray[], accs, ctrl)
    awaitBlocks(ctrl, blocks)
    for (const s of full) {
      // outputs are fresh, unshared arrays (callers own them); other values stay in the shared copy
      if (outputs.has(s)) {
        const out = alloc(s)
        out.set(Bs[s] as never)
        B[s] = out
      } else B[s] = Bs[s]!
    }
    finishSinks(B, accs, alloc)
  }
  return {
    n, rows, threads: workers + 1, desc, steps: members.map((m) => m.step), codegen: 'js',
    fullSlots: [...new Set([...full, ...views])], localSlots: rc.local.map(slotOf), run,
    dispose: () => (late ? late.dispose() : Promise.resolve()),
    get callerBlocks() {
      return callerBlocks
    },
    get workersStarted() {
      return late?.current !== undefined
    },
  }
}
