import { TesseraError } from '@tessera/core'
import type { Worker } from 'node:worker_threads'
import { nodeWorkerThreads } from '../host.js'

/** Tasks a worker may have queued (running included): the caller stages the next while one runs. */
export const QUEUE = 2

/** The worker's old-generation limit (see the constructor). */
const WORKER_OLD_MB = 64

/**
 * Worker threads that run one exported kernel `run(a0, a1, a2, a3)` of a module on a shared
 * memory. Each worker has a small task queue: the calling thread posts tasks, keeps computing its
 * own share, and blocks on Atomics only when it needs a result, so a run stays synchronous and
 * no thread waits for another to hand out or stage work while there is some queued.
 *
 * Control words per worker: [0] tasks posted, [1] tasks done, [2] quit, [3] failed, [4] ready
 * (its kernel instantiated, or failed), then QUEUE slots of 4 arguments and a claim word (task i in
 * slot i % QUEUE). A task runs where its claim word is first set: on the worker, or on the calling
 * thread (`claim`) when it has run out of work of its own while the task still waits in the queue.
 * A worker takes a few tens of milliseconds to start: a caller that posts only to ready workers
 * (`ready`) computes alone until they are, instead of waiting on a queue nobody runs yet.
 *
 * A task runs as `drive(run, a0, a1, a2, a3)`, by default one call of `run`. A kernel may split a
 * task into several calls (nearest.ts does): V8 swaps in a function's optimized code only at its
 * next call, so a task done in one long call runs entirely in baseline (Liftoff) code the first time.
 */
const workerSource = `
const { workerData } = require('node:worker_threads')
const { module, memory, ctrl, queue, driver } = workerData
const c = new Int32Array(ctrl)
const drive = new Function('run', 'a0', 'a1', 'a2', 'a3', driver)
let run
try {
  run = new WebAssembly.Instance(module, { env: { memory } }).exports.run
} catch (e) {
  Atomics.store(c, 3, 1)
}
Atomics.store(c, 4, 1)
let next = 0
for (;;) {
  while (Atomics.load(c, 0) === next && Atomics.load(c, 2) === 0) Atomics.wait(c, 0, next)
  if (Atomics.load(c, 2) === 1) break
  const s = 5 + (next % queue) * 5
  if (run && Atomics.compareExchange(c, s + 4, 0, 1) === 0) {
    try { drive(run, c[s], c[s + 1], c[s + 2], c[s + 3]) } catch (e) { Atomics.store(c, 3, 1) }
  }
  next++
  Atomics.store(c, 1, next)
  Atomics.notify(c, 1)
}
`

/** The body of `drive(run, a0, a1, a2, a3)` that runs one task on a worker: by default one call. */
export const ONE_CALL = 'run(a0, a1, a2, a3)'

export class KernelThreads {
  private readonly workers: { worker: Worker; ctrl: Int32Array }[]

  constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, count: number, driver: string = ONE_CALL) {
    const wt = nodeWorkerThreads()
    if (!wt) throw new TesseraError('backend', 'fast.threads', 'this host has no worker threads')
    this.workers = Array.from({ length: count }, () => {
      const sab = new SharedArrayBuffer((5 + 5 * QUEUE) * 4)
      // no inherited execArgv: the source is plain CommonJS, and a parent's --input-type=module or
      // loader (--import tsx) would break or slow its start; V8 flags are per process and still apply
      // a stated old-generation limit (any up to 1 GiB; this worker's heap holds ~4 MiB of Node's
      // bootstrap and nothing per task) makes V8 size the new isolate's heap from it rather
      // than from the machine's memory: 0.7 MiB less resident per worker, measured on Node 20
      const worker = new wt.Worker(workerSource, {
        eval: true, execArgv: [], workerData: { module, memory, ctrl: sab, queue: QUEUE, driver },
        resourceLimits: { maxOldGenerationSizeMb: WORKER_OLD_MB },
      })
      worker.unref()
      return { worker, ctrl: new Int32Array(sab) }
    })
  }

  get count(): number {
    return this.workers.length
  }

  /** Whether worker t has started (its tasks would run now, or report its failure). */
  ready(t: number): boolean {
    return Atomics.load(this.workers[t]!.ctrl, 4) === 1
  }

  /** Tasks posted to worker t so far. */
  posted(t: number): number {
    return Atomics.load(this.workers[t]!.ctrl, 0)
  }

  /** Tasks worker t has finished so far (their results are visible to the caller once read). */
  done(t: number): number {
    const c = this.workers[t]!.ctrl
    if (Atomics.load(c, 3) === 1) throw new TesseraError('backend', 'fast.nearest', 'the WebAssembly kernel failed in a worker thread')
    return Atomics.load(c, 1)
  }

  /** Queue a task on worker t; the caller keeps at most QUEUE tasks unfinished there. */
  post(t: number, args: readonly [number, number, number, number]): void {
    const c = this.workers[t]!.ctrl
    const n = Atomics.load(c, 0)
    if (n - Atomics.load(c, 1) >= QUEUE) throw new TesseraError('backend', 'fast.nearest', 'a kernel thread queue overflowed')
    c.set(args, 5 + (n % QUEUE) * 5)
    c[5 + (n % QUEUE) * 5 + 4] = 0
    Atomics.store(c, 0, n + 1)
    Atomics.notify(c, 0)
  }

  /**
   * Claim task `index` of worker t (posted, not yet finished) for the calling thread: true when
   * the worker had not started it, and the caller must then run it (the worker skips it, and
   * counts it done).
   */
  claim(t: number, index: number): boolean {
    const c = this.workers[t]!.ctrl
    if (index < Atomics.load(c, 1) || index >= Atomics.load(c, 0)) return false
    return Atomics.compareExchange(c, 5 + (index % QUEUE) * 5 + 4, 0, 1) === 0
  }

  /** Block until worker t has finished at least `count` tasks; throws if the kernel failed there. */
  waitDone(t: number, count: number): void {
    const c = this.workers[t]!.ctrl
    const deadline = Date.now() + 60_000
    for (;;) {
      const done = this.done(t)
      if (done >= count) return
      if (Date.now() > deadline) throw new TesseraError('backend', 'fast.nearest', 'a kernel thread did not answer within 60 s')
      Atomics.wait(c, 1, done, 1000)
    }
  }

  /** Resolves once every worker has exited. */
  async dispose(): Promise<void> {
    for (const { ctrl } of this.workers) {
      Atomics.store(ctrl, 2, 1)
      Atomics.notify(ctrl, 0)
    }
    await Promise.all(this.workers.map(({ worker }) => worker.terminate()))
  }
}
