import { TesseraError } from '@tessera/core'
import type { AnyTypedArray, Var } from '@tessera/core'
import type { RowChainRun } from '../row-chain.js'
import type { WasmChainLayout } from './chain-codegen.js'
import { CTRL_MODE } from './chain-codegen.js'
import { bitTreePairs } from './chain-bittree.js'
import { LateWorkers, QUEUE, kernelThreads } from './threads.js'
import type { ProgramCalls, WorkerPool } from './threads.js'

const elems = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)

/** The runner of a chain module: a RowChainRun that also says which form its matmuls took. */
export interface WasmRowChainRun extends RowChainRun {
  /**
   * Whether a call may run its bit-tree matmuls as prefix trees (default true; the results are
   * the same bits either way, so tests set it false to compare the two forms).
   */
  bitTree: boolean
  /** The last call's form: 'bitTree' when its operands had that form (chain-bittree.ts). */
  readonly form: 'plain' | 'bitTree'
  /** Exp passes compiled as two loops (chain-emit.ts's splitExp). */
  readonly splitExpPasses: number
  /** Passes of sums that skip the vectors a split exp pass left at +0 where their terms are zero (chain-emit.ts's sparsePass). */
  readonly sparsePasses: number
}

/**
 * Runs a chain compiled by chain-codegen.ts: copies the values it reads into its memory (with
 * the pairs of bit-tree operands, when every one of them has that form this call), lets
 * every thread claim blocks (`run(thread)`; worker threads join through KernelThreads), copies
 * the row values it writes out, and adds each sink's per-block partials in block order.
 */
export function wasmRowChain(layout: WasmChainLayout, slotOf: (v: Var) => number, workers?: WorkerPool, calls?: ProgramCalls): WasmRowChainRun {
  const { n, rows, blocks, threads } = layout
  let inst: { memory: WebAssembly.Memory; run: (t: number) => void; late?: LateWorkers } | undefined
  let callerBlocks = 0
  let bitTree = true
  let form: 'plain' | 'bitTree' = 'plain'
  const instance = () => {
    if (inst) return inst
    const memory = new WebAssembly.Memory({ initial: layout.pages, maximum: layout.pages, shared: true })
    new Uint8Array(memory.buffer, layout.constants.addr, layout.constants.bytes.length).set(layout.constants.bytes)
    const run = (new WebAssembly.Instance(layout.module, { env: { memory } }).exports as { run: (t: number) => void }).run
    // its workers start after the program's first call (where they cannot, the calling thread runs every block)
    const late = threads > 1 ? new LateWorkers(() => kernelThreads(workers, layout.module, memory, threads - 1), calls) : undefined
    return (inst = { memory, run, ...(late ? { late } : {}) })
  }
  const run = (B: AnyTypedArray[], alloc: (slot: number) => AnyTypedArray): void => {
    const { memory, run, late } = instance()
    const pool = late?.forCall()
    const buf = memory.buffer
    for (const [v, reg] of layout.copyIn) new Float32Array(buf, reg.addr, elems(v)).set(B[slotOf(v)] as Float32Array)
    // the check is O(k 2^k) per operand, against the O(n k 2^k) of the plain matmul
    const pairs = bitTree && layout.trees.length > 0 ? layout.trees.map((t) => bitTreePairs(B[slotOf(t.operand)] as Float32Array, t.k)) : []
    form = pairs.length > 0 && pairs.every((p) => p !== undefined) ? 'bitTree' : 'plain'
    const treeOnly = new Set(form === 'bitTree' ? layout.trees.map((t) => t.operand.id) : [])
    if (form === 'bitTree') layout.trees.forEach((t, i) => new Float64Array(buf, t.pairs, 2 * t.k).set(pairs[i]!))
    for (const [v, reg, k] of layout.copyPacked) {
      if (treeOnly.has(v.id)) continue
      const src = B[slotOf(v)] as Float32Array, w = reg.elems
      const dst = new Float64Array(buf, reg.addr, 4 * k * Math.ceil(w / 4))
      for (let t = 0; t < k; t++)
        for (let j = 0; j < w; j++) dst[4 * ((j >> 2) * k + t) + (j & 3)] = src[t * w + j]!
    }
    for (const s of layout.sinks) new Float64Array(buf, s.addr, s.stride * blocks).fill(0)
    const ctrl = new Int32Array(buf, 0, 16)
    // counters and the call's form first, the block counter last: a thread claims blocks only
    // once the inputs are in (and reads the form after its claim)
    for (let i = 1; i < 16; i++) Atomics.store(ctrl, i, 0)
    Atomics.store(ctrl, CTRL_MODE, form === 'bitTree' ? 1 : 0)
    Atomics.store(ctrl, 0, 0)
    if (pool)
      for (let t = 0; t < pool.count; t++) if (pool.posted(t) - pool.done(t) < QUEUE) pool.post(t, [t + 1, 0, 0, 0])
    run(0)
    // wait for the blocks, not for the workers: one that wakes late (a busy machine) finds none
    // left and returns, instead of holding up the call (nor does a worker still running a late
    // task from an earlier call: it claims blocks of this one only after the reset above)
    const deadline = Date.now() + 60_000
    for (let done = Atomics.load(ctrl, 1); done < blocks; done = Atomics.load(ctrl, 1)) {
      if (pool) for (let t = 0; t < pool.count; t++) pool.done(t) // throws if a worker failed
      if (Date.now() > deadline) throw new TesseraError('backend', 'fast.rows', 'the worker threads of a row chain did not finish within 60 s')
      Atomics.wait(ctrl, 1, done, 1)
    }
    callerBlocks = Atomics.load(ctrl, 4)
    for (const [v, reg] of layout.copyOut) {
      const s = slotOf(v)
      const out = alloc(s) as Float32Array
      out.set(new Float32Array(buf, reg.addr, elems(v)))
      B[s] = out
    }
    for (const sk of layout.sinks) {
      const s = slotOf(sk.out)
      const out = alloc(s) as Float32Array
      const part = new Float64Array(buf, sk.addr, sk.stride * blocks)
      for (let j = 0; j < sk.width; j++) {
        let acc = 0
        for (let b = 0; b < blocks; b++) acc += part[b * sk.stride + j]!
        out[j] = acc
      }
      B[s] = out
    }
  }
  return {
    n, rows, threads, steps: [], codegen: 'wasm', splitExpPasses: layout.splitExpPasses, sparsePasses: layout.sparsePasses,
    desc: { n, rows, steps: [], views: [], locals: [] },
    fullSlots: [...new Set([...layout.copyIn, ...layout.copyOut].map(([v]) => slotOf(v)))],
    localSlots: [],
    run,
    dispose: async () => {
      const late = inst?.late
      inst = undefined
      await late?.dispose()
    },
    get callerBlocks() {
      return callerBlocks
    },
    get workersStarted() {
      return inst?.late?.current !== undefined
    },
    get bitTree() {
      return bitTree
    },
    set bitTree(on: boolean) {
      bitTree = on
    },
    get form() {
      return form
    },
  }
}
