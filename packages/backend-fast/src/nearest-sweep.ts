import type { AnyTypedArray } from '@tessera/core'
import { QUEUE } from './wasm/threads.js'
import type { KernelThreads } from './wasm/threads.js'
import type { TermKernel } from './nearest-operands.js'
import type { KernelRun } from './nearest-kernel.js'
import { exactRowResult, rescoreRow } from './nearest-kernel.js'
import { SCREEN_STATE } from './nearest-screen.js'
import { screenVerdict } from './nearest-verdicts.js'
import { rowSquaresJs } from './nearest-terms.js'
import type { Geometry } from './nearest-geometry.js'

/** Smallest chunk handed out while rows remain (the last ones are split finer to end together). */
export const MIN_CHUNK = 64

/** What a sweep reads from its step (nearest.ts): fixed for the step's module. */
export interface SweepStep {
  readonly m: number
  readonly k: number
  readonly g: Geometry
  /** Runs one staged chunk: (rows | flags, a, row, out) addresses (nearest-kernel.ts driverSource). */
  readonly run: (rows: number, a: number, row: number, out: number) => void
  readonly exact: KernelRun
  readonly memory: WebAssembly.Memory
  readonly rowTerms: readonly number[]
  /** Per term, how it is copied into a staged chunk (undefined: a row term the kernel or rowSquaresJs sums from the rows). */
  readonly termKernels: readonly (TermKernel | undefined)[]
}

interface Task {
  readonly r0: number
  readonly cnt: number
  readonly at: number
  readonly args: readonly [number, number, number, number]
}

/**
 * One pass over the rows of A (or the rows listed in `only`) in staged chunks, on the calling
 * thread and the workers: screened when `full` is given (rows screening leaves whole are added to
 * it), else in float32. A class rather than closures made per call: V8 compiled each call's fresh
 * closures again (a step's calls, and each of several steps' calls), on a compiler thread that
 * shares the machine's cores with the workers, and its malloc arenas kept the compilers' memory.
 */
export class Sweep {
  private readonly f32: Float32Array
  private readonly i32: Int32Array
  private readonly a: Float32Array
  private readonly m: number
  private readonly W: number
  private readonly flag: number
  private readonly rowsAt: number
  private readonly outAt: number
  private readonly cols = new Int32Array(4)
  private readonly pending: Task[][]
  private next = 0
  /** Chunks handed to worker threads. */
  chunksToWorkers = 0

  constructor(
    private readonly step: SweepStep,
    private readonly B: AnyTypedArray[],
    slotA: number,
    private readonly out: Int32Array,
    private readonly only: Int32Array | undefined,
    private readonly full: number[] | undefined,
    /** Flags above the row count for every chunk's run (nearest-screen.ts). */
    flag: number,
    private readonly threads: KernelThreads | undefined,
  ) {
    const buffer = step.memory.buffer
    this.f32 = new Float32Array(buffer)
    this.i32 = new Int32Array(buffer)
    this.a = B[slotA] as Float32Array
    this.m = only ? only.length : step.m
    this.W = threads?.count ?? 0
    this.flag = flag
    // screened chunks read the int16 rows and write the screening state
    this.rowsAt = full ? step.g.qa : step.g.a
    this.outAt = full ? step.g.qout : step.g.out
    this.pending = Array.from({ length: this.W }, () => [])
  }

  /** Runs the sweep to its end. */
  all(): void {
    const { g, run } = this.step
    const { W, threads, pending } = this
    // the calling thread's own chunks: smaller with more workers, so it is back to refill their
    // queues before they run dry (each holds QUEUE chunks)
    const tile = 4 * g.t.rows
    const own = W > 1 ? Math.min(g.chunk, Math.max(MIN_CHUNK, Math.ceil(g.chunk / W / tile) * tile)) : g.chunk
    for (;;) {
      // keep every started worker's queue full (staging for it while it computes), then compute a
      // chunk here; a worker still starting (the first call's) gets nothing, so nobody waits for it
      for (let w = 0; w < W; w++) {
        if (!threads!.ready(w)) continue
        const done = threads!.done(w)
        this.collectDone(w, done)
        for (let posted = threads!.posted(w); posted - done < QUEUE; posted++) {
          const cnt = this.take(g.chunk)
          if (cnt === 0) break
          const r0 = this.next - cnt
          const at = g.base + (1 + w * QUEUE + (posted % QUEUE)) * g.buf
          const task = this.args(at, this.stage(at, r0, cnt))
          threads!.post(w, task)
          pending[w]!.push({ r0, cnt, at, args: task })
          this.chunksToWorkers++
        }
      }
      const cnt = this.take(own)
      if (cnt === 0) break
      const r0 = this.next - cnt
      const at = g.base
      const [a0, a1, a2, a3] = this.args(at, this.stage(at, r0, cnt))
      run(a0, a1, a2, a3)
      this.collect(at, r0, cnt)
    }
    // out of rows: chunks still waiting in a worker's queue run here (newest first, while the
    // worker finishes the one it is on), so this thread does not wait for them in turn
    for (let w = 0; w < W; w++) {
      const q = pending[w]!, posted = threads!.posted(w)
      for (let i = posted - 1; i >= posted - q.length; i--) {
        if (!threads!.claim(w, i)) continue
        const [a0, a1, a2, a3] = q[i - (posted - q.length)]!.args
        run(a0, a1, a2, a3)
      }
    }
    for (let w = 0; w < W; w++) {
      const posted = threads!.posted(w)
      threads!.waitDone(w, posted)
      this.collectDone(w, posted)
    }
  }

  /**
   * Hands out the next rows (from `next`, which it advances): at most `limit`; with threads the
   * last ones shrink so that all threads end together. Returns the count (0 when none are left).
   */
  private take(limit: number): number {
    const { m, next } = this
    if (next >= m) return 0
    const rest = m - next
    const T = this.W + 1
    const { chunk, t } = this.step.g
    const tile = 4 * t.rows
    const want = T > 1 ? Math.max(MIN_CHUNK, Math.ceil(rest / (2 * T) / tile) * tile) : chunk
    const cnt = Math.min(limit, want, rest)
    this.next = next + cnt
    return cnt
  }

  private args(at: number, padded: number): [number, number, number, number] {
    const { g } = this.step
    return [padded | this.flag, at + this.rowsAt, at + g.row, at + this.outAt]
  }

  /**
   * Copies a chunk's rows into the buffer at `at` (zero rows up to a whole register tile) and
   * computes its row terms (a screened chunk's kernel scales them); returns the padded row count.
   */
  private stage(at: number, r0: number, cnt: number): number {
    const { g, k, rowTerms, termKernels } = this.step
    const { f32, a, only, B } = this
    const R = g.t.rows
    const padded = Math.ceil(cnt / R) * R
    const dst = (at + g.a) / 4
    const rowAt = (at + g.row) / 4
    if (only) {
      for (let q = 0; q < cnt; q++) {
        const r = only[r0 + q]!
        f32.set(a.subarray(r * k, (r + 1) * k), dst + q * k)
        for (let ri = 0; ri < rowTerms.length; ri++) termKernels[rowTerms[ri]!]?.(B, f32, rowAt + ri * g.chunk + q, r, 1)
      }
    } else {
      f32.set(a.subarray(r0 * k, (r0 + cnt) * k), dst)
      for (let ri = 0; ri < rowTerms.length; ri++) termKernels[rowTerms[ri]!]?.(B, f32, rowAt + ri * g.chunk, r0, cnt)
    }
    // row terms summed from the rows: by the screening kernel, else here
    if (!this.full)
      for (let ri = 0; ri < rowTerms.length; ri++) if (!termKernels[rowTerms[ri]!]) rowSquaresJs(a, k, r0, cnt, only, f32, rowAt + ri * g.chunk)
    if (padded > cnt) f32.fill(0, dst + cnt * k, dst + padded * k)
    return padded
  }

  /** Collects the chunks worker `w` has finished (its first `done` tasks; tasks finish in order). */
  private collectDone(w: number, done: number): void {
    const q = this.pending[w]!
    while (q.length > this.threads!.posted(w) - done) {
      const { r0, cnt, at } = q.shift()!
      this.collect(at, r0, cnt)
    }
  }

  private collect(at: number, r0: number, cnt: number): void {
    const { step, f32, i32, out, only, full } = this
    if (full) collectScreened(step, f32, i32, out, only, full, this.cols, at, r0, cnt)
    else collectExact(step, f32, i32, out, only, at, r0, cnt)
  }
}

/*
 * The results of a finished chunk's rows (staged at `at`), by functions of their arguments, not
 * methods reading the sweep's fields: as a method the optimized code was thrown away after every
 * call (each call's sweep is a new object) and compiled again. And two functions, one per kind
 * of sweep: one function for both was optimized on the screened sweep's rows and thrown away at
 * the first float32 sweep, whose branch it had never run.
 */

function collectExact(step: SweepStep, f32: Float32Array, i32: Int32Array, out: Int32Array, only: Int32Array | undefined, at: number, r0: number, cnt: number): void {
  const first = (at + step.g.out) / 4
  for (let q = 0; q < cnt; q++) out[only ? only[r0 + q]! : r0 + q] = exactRowResult(f32, i32, first + q * 12)
}

function collectScreened(
  step: SweepStep, f32: Float32Array, i32: Int32Array, out: Int32Array, only: Int32Array | undefined, full: number[], cols: Int32Array,
  at: number, r0: number, cnt: number,
): void {
  const { g, exact, k } = step
  const verdicts = (at + g.qout + g.chunk * SCREEN_STATE) / 4
  for (let q = 0; q < cnt; q++) {
    const r = only ? only[r0 + q]! : r0 + q
    // the kernel's verdict: the answer where screening left one candidate
    const v = i32[verdicts + q]!
    if (v >= 0) {
      out[r] = v
      continue
    }
    // else (the kernel answers every row left one candidate) a few candidates, or none trusted
    const count = screenVerdict(f32, i32, (at + g.qout) / 4 + q * (SCREEN_STATE / 4), cols)
    if (count < 0) full.push(r)
    else out[r] = rescoreRow(exact, f32, i32, g, k * 4, at, q, cols, count)
  }
}
