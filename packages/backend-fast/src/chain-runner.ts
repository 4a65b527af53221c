import { TesseraError } from '@tessera/core'
import type { AnyTypedArray, DType } from '@tessera/core'
import type { Worker } from 'node:worker_threads'
import { nodeWorkerThreads } from './host.js'
import { helperNames, kernelHelpers } from './emit.js'
import { fastMathFactory } from './fastmath.js'
import type { Kernel } from './loops.js'
import { compileKernel } from './loops.js'
import { matmulF64, matmulFactory } from './matmul.js'
import type { SmallKLayout, SmallKRunner } from './wasm/smallk.js'
import { smallKRunnerFactory } from './wasm/smallk.js'
import type { MapModule, MathMap } from './wasm/mathmap.js'
import { mathMapFactory } from './wasm/mathmap.js'

/**
 * A row-blocked chain as plain data, so that worker threads can compile and run it too: its
 * kernels' sources (generated for a block of R rows), matmuls, the row-indexed slots each block
 * sees as the subarray of its rows (slot, elements per row), and the block-local slots (slot,
 * dtype, elements per row).
 */
export interface ChainDesc {
  readonly n: number
  readonly rows: number
  readonly steps: readonly ChainStepDesc[]
  readonly views: readonly (readonly [number, number])[]
  readonly locals: readonly (readonly [number, DType, number])[]
}

export type ChainStepDesc =
  | { readonly kind: 'kernel'; readonly source: string; readonly sink: boolean }
  | {
      readonly kind: 'matmul'
      readonly a: number
      readonly b: number
      readonly out: number
      readonly k: number
      readonly n: number
      /** The WebAssembly small-k kernel for this shape (a compiled module also crosses to worker threads). */
      readonly wasm?: { readonly module: WebAssembly.Module; readonly layout: SmallKLayout }
    }
  /**
   * A WebAssembly exp map (see wasm/mathmap.ts) of `perRow` elements per leading-axis row, in
   * map rows of `width` (the last axis); each thread makes its instance from the module.
   */
  | {
      readonly kind: 'map'
      readonly in: number
      readonly rows: readonly number[]
      readonly out: number
      readonly perRow: number
      readonly width: number
      readonly module: MapModule
    }

export interface CompiledChain {
  readonly desc: ChainDesc
  readonly fns: readonly (Kernel | undefined)[]
  /** This thread's instance of each matmul step's WebAssembly kernel, if it has one. */
  readonly smallK: readonly (SmallKRunner | undefined)[]
  /** This thread's instance of each map step's module. */
  readonly maps: readonly (MathMap | undefined)[]
}

type MatmulFn = (a: Float32Array, b: Float32Array, out: Float32Array, batch: number, m: number, k: number, n: number) => void

/** Control words of one chain call: next block to claim, sinks done up to, blocks done, failure flag. */
export const CTRL_WORDS = 4

/**
 * The chain runner, self-contained (worker threads rebuild it from `chainRunner.toString()`
 * with their own matmul and kernel compiler, so both sides run the same code).
 */
export function chainRunner(
  matmulF64: MatmulFn,
  compile: (source: string) => Kernel,
  makeSmallK: (module: WebAssembly.Module, layout: SmallKLayout) => SmallKRunner,
  makeMap: (m: MapModule) => MathMap,
): {
  compileChain(desc: ChainDesc): CompiledChain
  runBlocks(cc: CompiledChain, B: readonly AnyTypedArray[], accs: readonly Float64Array[], ctrl: Int32Array): number
  awaitBlocks(ctrl: Int32Array, blocks: number): void
} {
  const NEXT = 0, SINK = 1, DONE = 2, FAILED = 3

  function compileChain(desc: ChainDesc): CompiledChain {
    return {
      desc,
      fns: desc.steps.map((st) => (st.kind === 'kernel' ? compile(st.source) : undefined)),
      smallK: desc.steps.map((st) => (st.kind === 'matmul' && st.wasm ? makeSmallK(st.wasm.module, st.wasm.layout) : undefined)),
      maps: desc.steps.map((st) => (st.kind === 'map' ? makeMap(st.module) : undefined)),
    }
  }

  /**
   * Claims blocks of rows until none are left and runs the chain on each (returns how many).
   * Every thread of a call runs this on the same buffers and control words; blocks are claimed
   * dynamically, so a thread that is slow (or never starts) only leaves more blocks to the
   * others. A chain's sinks add block b only after block b - 1 (a ticket in ctrl[SINK]), so
   * their float64 sums take the rows in order whichever thread computed them, and stay
   * bit-identical to one thread's. A block whose ticket has not come yet keeps its block-local
   * buffers and waits in a queue while the thread computes further blocks in another set of
   * buffers (with one set, a thread that waited right away slept on the ticket for a good part
   * of the call; bench/README.md has the numbers); a thread waits only when all its sets are
   * queued.
   */
  function runBlocks(cc: CompiledChain, B: readonly AnyTypedArray[], accs: readonly Float64Array[], ctrl: Int32Array): number {
    const { n, rows, steps, views, locals } = cc.desc
    const blocks = Math.ceil(n / rows)
    const hasSink = steps.some((st) => st.kind === 'kernel' && st.sink)
    for (const sk of cc.smallK) sk?.begin()
    const newSet = (): AnyTypedArray[] => {
      const Bb = B.slice()
      for (const [s, dt, w] of locals) Bb[s] = dt === 'float32' ? new Float32Array(rows * w) : dt === 'int32' ? new Int32Array(rows * w) : new Uint8Array(rows * w)
      return Bb
    }
    // buffer sets: free ones (the most recently freed is reused first, it is warm in cache) and
    // queued blocks waiting for their sink ticket, in claim order (ascending block numbers)
    const free: AnyTypedArray[][] = [newSet()]
    const queued: { b: number; R: number; Bb: AnyTypedArray[] }[] = []
    let sets = 1
    const sinkBlock = (q: { b: number; R: number; Bb: AnyTypedArray[] }) => {
      let k = 0
      steps.forEach((st, i) => st.kind === 'kernel' && st.sink && cc.fns[i]!(q.Bb, q.R, accs[k++]))
      Atomics.store(ctrl, SINK, q.b + 1)
      Atomics.notify(ctrl, SINK)
      Atomics.add(ctrl, DONE, 1)
      Atomics.notify(ctrl, DONE)
      free.push(q.Bb)
    }
    // sinks the queued blocks whose ticket has come; with `wait`, waits for the oldest one first
    const drain = (wait: boolean) => {
      if (wait && queued.length > 0) waitFor(ctrl, SINK, queued[0]!.b)
      while (queued.length > 0 && Atomics.load(ctrl, SINK) === queued[0]!.b) sinkBlock(queued.shift()!)
    }
    for (let ran = 0; ; ran++) {
      const b = Atomics.add(ctrl, NEXT, 1)
      if (b >= blocks) {
        while (queued.length > 0) drain(true)
        return ran
      }
      const lo = b * rows, R = Math.min(rows, n - lo)
      if (free.length === 0) {
        if (sets < MAX_SETS) {
          free.push(newSet())
          sets++
        } else drain(true)
      }
      const Bb = free.pop()!
      for (const [s, w] of views) Bb[s] = B[s]!.subarray(lo * w, (lo + R) * w)
      steps.forEach((st, i) => {
        if (st.kind === 'matmul') {
          const sk = cc.smallK[i]
          if (sk) sk.run(Bb[st.a] as Float32Array, Bb[st.b] as Float32Array, Bb[st.out] as Float32Array, R)
          else matmulF64(Bb[st.a] as Float32Array, Bb[st.b] as Float32Array, Bb[st.out] as Float32Array, 1, R, st.k, st.n)
        } else if (st.kind === 'map') {
          cc.maps[i]!(Bb[st.in] as Float32Array, st.rows.map((s) => Bb[s] as Float32Array), Bb[st.out] as Float32Array, R * st.perRow, st.width)
        }
        else if (!st.sink) cc.fns[i]!(Bb, R)
      })
      if (hasSink) {
        queued.push({ b, R, Bb })
        drain(false)
      } else {
        free.push(Bb)
        Atomics.add(ctrl, DONE, 1)
        Atomics.notify(ctrl, DONE)
      }
    }
  }

  /** Sets of block-local buffers a thread may hold (one computing, the rest queued for the sink ticket). */
  const MAX_SETS = 8

  /** Blocks until ctrl[i] === value (only ever waits when another thread holds the ticket). */
  function waitFor(ctrl: Int32Array, i: number, value: number): void {
    for (;;) {
      const c = Atomics.load(ctrl, i)
      if (c === value) return
      if (Atomics.load(ctrl, FAILED) !== 0) throw new Error('fast backend: a worker thread running a row chain failed')
      Atomics.wait(ctrl, i, c, 50)
    }
  }

  /** Waits until all `blocks` blocks of a call are done (run by whichever threads claimed them). */
  function awaitBlocks(ctrl: Int32Array, blocks: number): void {
    for (;;) {
      const c = Atomics.load(ctrl, DONE)
      if (c >= blocks) return
      if (Atomics.load(ctrl, FAILED) !== 0) throw new Error('fast backend: a worker thread running a row chain failed')
      Atomics.wait(ctrl, DONE, c, 50)
    }
  }

  return { compileChain, runBlocks, awaitBlocks }
}

export const { compileChain, runBlocks, awaitBlocks } = chainRunner(matmulF64, compileKernel, smallKRunnerFactory(), mathMapFactory())

/**
 * A worker's script, built from the sources of the self-contained factories (fast math, matmul, the small-k WebAssembly runner,
 * chain runner) and of the small helpers: it needs no module loading, so it runs the same under
 * a TypeScript loader, from dist/, or in a test runner. (`__name` is what a keepNames transform,
 * such as tsx's, wraps named functions in.)
 */
function workerSource(): string {
  const h = kernelHelpers
  return `
var __name = (f) => f;
const { parentPort, workerData } = require('node:worker_threads');
const FM = (${fastMathFactory.toString()})();
const MM = (${matmulFactory.toString()})();
const H = { F: Math.fround, TANH: FM.fastTanh, TANH_TAB: FM.TANH_TAB, SGN: FM.signOf, EXP: FM.expF32, RNE: ${h.RNE.toString()}, MAX: ${h.MAX.toString()}, MIN: ${h.MIN.toString()}, CI: ${h.CI.toString()} };
const names = ${JSON.stringify(helperNames)};
function compile(source) {
  const f = new Function(...names, 'return function kernel(B, R, ACC) {\\n' + source + '\\n}');
  const hs = Object.assign({}, H, { LOG: FM.makeLogF32() });
  return f(...names.map((n) => hs[n]));
}
const CR = (${chainRunner.toString()})(MM.matmulF64, compile, (${smallKRunnerFactory.toString()})(), (${mathMapFactory.toString()})());
const cc = CR.compileChain(workerData.desc);
parentPort.on('message', (msg) => {
  try { CR.runBlocks(cc, msg.B, msg.accs, msg.ctrl) } catch (e) { Atomics.store(msg.ctrl, 3, 1); Atomics.notify(msg.ctrl, 1); Atomics.notify(msg.ctrl, 2) }
});
`
}

/**
 * Worker threads for one row chain: each compiles the chain's kernels once and joins each call
 * the calling thread posts. A worker that fails to start never claims a block: the calling
 * thread then runs them all.
 */
export class ChainThreads {
  private readonly workers: Worker[]

  constructor(desc: ChainDesc, count: number) {
    // the worker script rebuilds exactly these helpers; a new one must be added there first
    const known = new Set(['F', 'TANH', 'TANH_TAB', 'SGN', 'EXP', 'LOG', 'RNE', 'MAX', 'MIN', 'CI'])
    if (helperNames.some((h) => !known.has(h))) throw new TesseraError('backend', 'fast.threads', 'a kernel helper the worker script does not rebuild')
    const wt = nodeWorkerThreads()
    if (!wt) throw new TesseraError('backend', 'fast.threads', 'this host has no worker threads')
    this.workers = Array.from({ length: count }, () => {
      const w = new wt.Worker(workerSource(), { eval: true, workerData: { desc } })
      w.unref()
      w.on('error', () => {})
      return w
    })
  }

  /** Asks every worker to join a call; B's slots that threads touch and accs must be SharedArrayBuffer-backed. */
  post(B: readonly (AnyTypedArray | undefined)[], accs: readonly Float64Array[], ctrl: Int32Array): void {
    for (const w of this.workers) w.postMessage({ B, accs, ctrl })
  }

  /** Resolves once every worker has exited. */
  async dispose(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()))
  }
}
