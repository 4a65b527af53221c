import { Worker } from 'node:worker_threads'

/**
 * Worker threads that run one exported kernel `run(a0, a1, a2, a3)` of a module on a shared
 * memory. The calling thread hands out work and blocks on Atomics until it is done, so a run
 * stays synchronous and the calling thread computes its own share meanwhile.
 *
 * Control words per worker: [0] generation (bumped per task), [1..4] arguments, [5] generation
 * done, [6] quit, [7] failed.
 */
const workerSource = `
const { workerData } = require('node:worker_threads')
const { module, memory, ctrl } = workerData
const c = new Int32Array(ctrl)
let run
try {
  run = new WebAssembly.Instance(module, { env: { memory } }).exports.run
} catch (e) {
  Atomics.store(c, 7, 1)
}
let seen = 0
for (;;) {
  Atomics.wait(c, 0, seen)
  seen = Atomics.load(c, 0)
  if (Atomics.load(c, 6) === 1) break
  if (run) {
    try { run(c[1], c[2], c[3], c[4]) } catch (e) { Atomics.store(c, 7, 1) }
  }
  Atomics.store(c, 5, seen)
  Atomics.notify(c, 5)
}
`

export class KernelThreads {
  private readonly workers: { worker: Worker; ctrl: Int32Array }[]

  constructor(module: WebAssembly.Module, memory: WebAssembly.Memory, count: number) {
    this.workers = Array.from({ length: count }, () => {
      const sab = new SharedArrayBuffer(8 * 4)
      const worker = new Worker(workerSource, { eval: true, workerData: { module, memory, ctrl: sab } })
      worker.unref()
      return { worker, ctrl: new Int32Array(sab) }
    })
  }

  get count(): number {
    return this.workers.length
  }

  start(t: number, args: readonly [number, number, number, number]): void {
    const c = this.workers[t]!.ctrl
    c.set(args, 1)
    Atomics.add(c, 0, 1)
    Atomics.notify(c, 0)
  }

  /** Block until worker t has finished its task; throws if the kernel failed there. */
  wait(t: number): void {
    const c = this.workers[t]!.ctrl
    const gen = Atomics.load(c, 0)
    const deadline = Date.now() + 60_000
    for (;;) {
      const done = Atomics.load(c, 5)
      if (done === gen) break
      if (Date.now() > deadline) throw new Error('fast backend: a kernel thread did not answer within 60 s')
      Atomics.wait(c, 5, done, 1000)
    }
    if (Atomics.load(c, 7) === 1) throw new Error('fast backend: the WebAssembly kernel failed in a worker thread')
  }

  dispose(): void {
    for (const { worker, ctrl } of this.workers) {
      Atomics.store(ctrl, 6, 1)
      Atomics.add(ctrl, 0, 1)
      Atomics.notify(ctrl, 0)
      void worker.terminate()
    }
  }
}
