import { TesseraError } from '@tessera/core'
import type { MessagePort, Worker } from 'node:worker_threads'
import { nodeWorkerThreads } from '../host.js'

/** Tasks a worker may have queued (running included): the caller stages the next while one runs. */
export const QUEUE = 2

/** The worker's old-generation limit (see the constructor). */
const WORKER_OLD_MB = 64

/**
 * Worker threads shared by every kernel of a backend (WorkerPool), and each kernel's view of them
 * (KernelThreads). A kernel is an exported `run(a0, a1, a2, a3)` of a module on a shared memory;
 * the calling thread posts tasks to a worker's small queue, keeps computing its own share, and
 * blocks on Atomics only when it needs a result, so a run stays synchronous and no thread waits
 * for another to hand out or stage work while there is some queued. A backend's programs run one
 * at a time on the calling thread, so its kernels take turns on one set of workers: a Node worker
 * costs ~9 MiB resident and tens of milliseconds to start, and residual VQ has a search per layer.
 *
 * Control words per worker: [0] tasks posted, [1] tasks done, [2] quit, [3] the id of a kernel
 * that failed there (0: none), [4] ready (started), then QUEUE slots of 4 arguments, a claim word
 * and a kernel id (task i in slot i % QUEUE). A task runs where its claim word is first set: on
 * the worker, or on the calling thread (`claim`) when it has run out of work of its own while the
 * task still waits in the queue. Kernels reach the workers as messages (module, memory, driver),
 * read synchronously (`receiveMessageOnPort`) when a task names a kernel the worker has not
 * instantiated yet; a released kernel's instance is dropped at the worker's next task (a release
 * posts an empty task to wake it), so its memory is not held there. A worker takes a few tens of
 * milliseconds to start: a caller that posts only to ready workers (`ready`) computes alone until
 * they are, instead of waiting on a queue nobody runs yet.
 *
 * A task runs as `drive(run, a0, a1, a2, a3)`, by default one call of `run`. A kernel may split a
 * task into several calls (nearest.ts does): V8 swaps in a function's optimized code only at its
 * next call, so a task done in one long call runs entirely in baseline (Liftoff) code the first time.
 */
const workerSource = `
const { workerData, receiveMessageOnPort } = require('node:worker_threads')
const { ctrl, queue, port } = workerData
const c = new Int32Array(ctrl)
const kernels = new Map()
const drain = () => {
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
    const k = m.message
    if (k.release) { kernels.delete(k.id); continue }
    try {
      const run = new WebAssembly.Instance(k.module, { env: { memory: k.memory } }).exports.run
      kernels.set(k.id, { run, drive: new Function('run', 'a0', 'a1', 'a2', 'a3', k.driver) })
    } catch (e) {
      kernels.set(k.id, undefined)
    }
  }
}
Atomics.store(c, 4, 1)
let next = 0
for (;;) {
  while (Atomics.load(c, 0) === next && Atomics.load(c, 2) === 0) Atomics.wait(c, 0, next)
  if (Atomics.load(c, 2) === 1) break
  const s = 5 + (next % queue) * 6
  const id = c[s + 5]
  if (Atomics.compareExchange(c, s + 4, 0, 1) === 0) {
    if (id === 0 || !kernels.has(id)) drain()
    if (id > 0) {
      const k = kernels.get(id)
      if (!k) Atomics.store(c, 3, id)
      else try { k.drive(k.run, c[s], c[s + 1], c[s + 2], c[s + 3]) } catch (e) { Atomics.store(c, 3, id) }
    }
  }
  next++
  Atomics.store(c, 1, next)
  Atomics.notify(c, 1)
}
`

/** Words per queue slot: 4 arguments, the claim word, the kernel id. */
const SLOT = 6

/**
 * A kernel's view of worker threads: through the backend's pool when there is one, else on
 * `count` workers of its own.
 */
export function kernelThreads(pool: WorkerPool | undefined, module: WebAssembly.Module, memory: WebAssembly.Memory, count: number, driver: string = ONE_CALL): KernelThreads {
  return pool ? pool.kernel(module, memory, driver) : KernelThreads.alone(module, memory, count, driver)
}

/** The body of `drive(run, a0, a1, a2, a3)` that runs one task on a worker: by default one call. */
export const ONE_CALL = 'run(a0, a1, a2, a3)'

/**
 * `count` worker threads for a backend's kernels, started when the first kernel is registered
 * (a backend whose programs never need them starts none). Tasks name their kernel; see above.
 */
export class WorkerPool {
  private workers: { worker: Worker; ctrl: Int32Array; port: MessagePort }[] | undefined
  private nextId = 1
  private disposed = false

  constructor(readonly count: number) {}

  /** Registers a kernel with every worker; its tasks go through the returned view (whose dispose ends the pool when `ownsPool`). */
  kernel(module: WebAssembly.Module, memory: WebAssembly.Memory, driver: string = ONE_CALL, ownsPool = false): KernelThreads {
    if (this.disposed) throw new TesseraError('backend', 'fast.threads', 'the worker threads were disposed')
    const workers = this.start()
    const id = this.nextId++
    for (const w of workers) w.port.postMessage({ id, module, memory, driver })
    return new KernelThreads(this, id, ownsPool)
  }

  private start(): NonNullable<WorkerPool['workers']> {
    if (this.workers) return this.workers
    const wt = nodeWorkerThreads()
    if (!wt) throw new TesseraError('backend', 'fast.threads', 'this host has no worker threads')
    this.workers = Array.from({ length: this.count }, () => {
      const sab = new SharedArrayBuffer((5 + SLOT * QUEUE) * 4)
      const { port1, port2 } = new wt.MessageChannel()
      // no inherited execArgv: the source is plain CommonJS, and a parent's --input-type=module or
      // loader (--import tsx) would break or slow its start; V8 flags are per process and still apply
      // a stated old-generation limit (any up to 1 GiB; this worker's heap holds ~4 MiB of Node's
      // bootstrap and nothing per task) makes V8 size the new isolate's heap from it rather
      // than from the machine's memory: 0.7 MiB less resident per worker, measured on Node 20
      const worker = new wt.Worker(workerSource, {
        eval: true, execArgv: [], workerData: { ctrl: sab, queue: QUEUE, port: port2 }, transferList: [port2],
        resourceLimits: { maxOldGenerationSizeMb: WORKER_OLD_MB },
      })
      worker.unref()
      port1.unref()
      return { worker, ctrl: new Int32Array(sab), port: port1 }
    })
    return this.workers
  }

  /** Worker threads started so far (0 until a kernel needs them). */
  get started(): number {
    return this.workers?.length ?? 0
  }

  private ctrl(t: number): Int32Array {
    const w = this.workers?.[t]
    if (!w) throw new TesseraError('backend', 'fast.threads', `no worker thread ${t} (the pool has ${this.count}, started: ${this.workers !== undefined})`)
    return w.ctrl
  }

  ready(t: number): boolean {
    return Atomics.load(this.ctrl(t), 4) === 1
  }

  posted(t: number): number {
    return Atomics.load(this.ctrl(t), 0)
  }

  /** Tasks worker t has finished; throws if kernel `id` failed there. */
  done(t: number, id: number): number {
    const c = this.ctrl(t)
    if (Atomics.load(c, 3) === id) throw new TesseraError('backend', 'fast.threads', 'the WebAssembly kernel failed in a worker thread')
    return Atomics.load(c, 1)
  }

  post(t: number, id: number, args: readonly [number, number, number, number]): void {
    const c = this.ctrl(t)
    const n = Atomics.load(c, 0)
    if (n - Atomics.load(c, 1) >= QUEUE) throw new TesseraError('backend', 'fast.threads', 'a kernel thread queue overflowed')
    const s = 5 + (n % QUEUE) * SLOT
    c.set(args, s)
    c[s + 4] = 0
    c[s + 5] = id
    Atomics.store(c, 0, n + 1)
    Atomics.notify(c, 0)
  }

  claim(t: number, index: number): boolean {
    const c = this.ctrl(t)
    if (index < Atomics.load(c, 1) || index >= Atomics.load(c, 0)) return false
    return Atomics.compareExchange(c, 5 + (index % QUEUE) * SLOT + 4, 0, 1) === 0
  }

  waitDone(t: number, id: number, count: number): void {
    const c = this.ctrl(t)
    const deadline = Date.now() + 60_000
    for (;;) {
      const done = this.done(t, id)
      if (done >= count) return
      if (Date.now() > deadline) throw new TesseraError('backend', 'fast.threads', 'a kernel thread did not answer within 60 s')
      Atomics.wait(c, 1, done, 1000)
    }
  }

  /** Drops kernel `id` on every worker: an empty task wakes an idle worker to read the message. */
  release(id: number): void {
    if (this.disposed || !this.workers) return
    this.workers.forEach((w, t) => {
      w.port.postMessage({ id, release: true })
      if (this.posted(t) - Atomics.load(w.ctrl, 1) < QUEUE) this.post(t, 0, [0, 0, 0, 0])
    })
  }

  /** Resolves once every worker has exited. */
  async dispose(): Promise<void> {
    this.disposed = true
    const workers = this.workers ?? []
    for (const { ctrl } of workers) {
      Atomics.store(ctrl, 2, 1)
      Atomics.notify(ctrl, 0)
    }
    await Promise.all(workers.map(({ worker, port }) => (port.close(), worker.terminate())))
  }
}

/**
 * One kernel's view of a pool's workers (worker t = the pool's t). `alone` makes a pool of its
 * own that dispose ends; a pool's kernel releases only itself.
 */
export class KernelThreads {
  private released = false

  constructor(
    private readonly pool: WorkerPool,
    private readonly id: number,
    private readonly owned = false,
  ) {}

  /** A kernel on `count` workers of its own (tests; a kernel outside any backend). */
  static alone(module: WebAssembly.Module, memory: WebAssembly.Memory, count: number, driver: string = ONE_CALL): KernelThreads {
    return new WorkerPool(count).kernel(module, memory, driver, true)
  }

  get count(): number {
    return this.pool.count
  }

  /** Whether worker t has started (its tasks would run now, or report their failure). */
  ready(t: number): boolean {
    return this.pool.ready(t)
  }

  /** Tasks posted to worker t so far (by every kernel of the pool). */
  posted(t: number): number {
    return this.pool.posted(t)
  }

  /** Tasks worker t has finished so far (their results are visible to the caller once read); throws if this kernel failed there. */
  done(t: number): number {
    return this.pool.done(t, this.id)
  }

  /** Queue a task on worker t; the caller keeps at most QUEUE tasks unfinished there. */
  post(t: number, args: readonly [number, number, number, number]): void {
    this.pool.post(t, this.id, args)
  }

  /**
   * Claim task `index` of worker t (posted, not yet finished) for the calling thread: true when
   * the worker had not started it, and the caller must then run it (the worker skips it, and
   * counts it done).
   */
  claim(t: number, index: number): boolean {
    return this.pool.claim(t, index)
  }

  /** Block until worker t has finished at least `count` tasks; throws if the kernel failed there. */
  waitDone(t: number, count: number): void {
    this.pool.waitDone(t, this.id, count)
  }

  /**
   * Frees the kernel on the workers (each drops it at its next task). A pool of its own is ended:
   * then this resolves once its workers have exited.
   */
  async dispose(): Promise<void> {
    if (this.released) return
    this.released = true
    if (this.owned) return this.pool.dispose()
    this.pool.release(this.id)
  }
}

/**
 * A program's calls, counted by its executable at the start of each, so its kernels know which is
 * the first (LateWorkers).
 */
export class ProgramCalls {
  private n = 0
  /** Marks the start of a call. */
  begin(): void {
    this.n++
  }
  /** Whether no call has started, or the one running is the first. */
  get first(): boolean {
    return this.n <= 1
  }
}

/**
 * When a kernel's worker threads start (docs/BACKENDS.md): in the program's first call the
 * kernel runs on the calling thread alone, and its workers start once that call has returned, on a
 * timer, or at the next call when no timer ran in between (calls awaited back to back); `atFirstCall`
 * starts them within the first call, for kernels whose work repays them there. Starting costs the
 * calling thread milliseconds (Node's worker_threads module loaded, the workers made) and a worker
 * is ready only tens of milliseconds later, too late to take much of the call that started it. A
 * start that fails (a host out of threads or memory) leaves the kernel on the calling thread,
 * which computes the same values. Without `calls` (a kernel outside any program) the kernel's own
 * calls are counted, one per `forCall`.
 */
export class LateWorkers<T extends { dispose(): Promise<void> } = KernelThreads> {
  private threads: T | undefined
  private timer = false
  private stopped = false
  private readonly calls: ProgramCalls
  private readonly own: boolean

  constructor(
    private readonly make: () => T,
    calls?: ProgramCalls,
    private readonly atFirstCall = false,
  ) {
    this.own = calls === undefined
    this.calls = calls ?? new ProgramCalls()
  }

  /** The workers this call of the kernel may use, started now where it is their time (undefined: the calling thread alone). */
  forCall(): T | undefined {
    if (this.own) this.calls.begin()
    if (this.threads || this.stopped) return this.threads
    if (this.calls.first && !this.atFirstCall) {
      if (!this.timer && typeof setTimeout === 'function') {
        this.timer = true
        setTimeout(() => void this.start(), 0)
      }
      return undefined
    }
    return this.start()
  }

  /** The workers, if started. */
  get current(): T | undefined {
    return this.threads
  }

  private start(): T | undefined {
    if (this.threads || this.stopped) return this.threads
    try {
      this.threads = this.make()
    } catch {
      this.stopped = true
    }
    return this.threads
  }

  /** Releases the workers (a later call runs on the calling thread); resolves once a pool of the kernel's own has exited. */
  dispose(): Promise<void> {
    this.stopped = true
    const t = this.threads
    this.threads = undefined
    return t ? t.dispose() : Promise.resolve()
  }
}
