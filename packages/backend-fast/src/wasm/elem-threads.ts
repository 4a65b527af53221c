import { TesseraError } from '@tessera/core'
import { I32, assemble } from './asm.js'
import { ElemCode } from './elem-code.js'
import type { ChunkAddressing, ElemLayout } from './elem-kernel.js'
import { CONST_POOL_BYTES, elementwiseLayout, emitChunk, singleSplats, tileRow } from './elem-kernel.js'
import type { ElemGroup, ElemRun, ElemType } from './elementwise.js'
import { ConstPool } from './simd-ops.js'
import { LateWorkers, QUEUE, kernelThreads } from './threads.js'
import type { ProgramCalls, WorkerPool } from './threads.js'

/**
 * An elementwise group (elementwise.ts) on several threads: heavy loops (tanh over 2^18 elements
 * and more: FSQ's forward) whose compute outweighs copying the operands into a shared memory
 * whole. Every thread claims chunks (those of the single-thread kernel, `run(thread)`; worker
 * threads join through KernelThreads) and writes them in place, so the results are the
 * single-thread kernel's bits whatever the thread count and whichever thread ran a chunk (row sums
 * stay inside a chunk: chunks hold whole rows). The calling thread waits for the chunks, not for
 * its workers: one that starts late finds none left.
 *
 * Memory: control words at 0 (next chunk, chunks done), then the chunk layout's repeated rows and
 * single values (elem-kernel.ts), each thread's term scratch, then the whole operands, outputs and
 * sums, each region a multiple of 16 bytes, then the vector constants.
 */
interface ThreadedLayout {
  readonly L: ElemLayout
  readonly chunks: number
  /** Byte offsets of the chunk layout (rows, singles) and of each thread's terms. */
  readonly chunkBase: number
  readonly termBase: number
  readonly whole: readonly number[]
  /** Each per-row value's region (the whole array: n / inner values). */
  readonly perRow: readonly number[]
  readonly outs: readonly number[]
  readonly sums: number
  /** The vector constants' pool (CONST_POOL_BYTES), last. */
  readonly poolBase: number
  readonly bytes: number
}

const align16 = (x: number) => Math.ceil(x / 16) * 16

function threadedLayout(g: ElemGroup, threads: number): ThreadedLayout {
  // chunks of a multiple of 4 elements, so no thread's last vector spills into another's chunk
  const L = elementwiseLayout(g, 4)
  const chunks = Math.ceil(L.n / L.chunk)
  const chunkBase = 64
  const termBase = align16(chunkBase + L.termOff)
  let at = termBase + threads * 4 * L.padded
  const region = (elems: number) => {
    const r = at
    at += align16(4 * (elems + 4))
    return r
  }
  const whole = L.whole.map(() => region(L.n))
  const perRow = L.perRow.map((p) => region(L.n / p.inner))
  const outs = g.exprs.map(() => region(L.n))
  const sums = region(g.rowSum ? L.n / g.rowSum.width : 0)
  return { L, chunks, chunkBase, termBase, whole, perRow, outs, sums, poolBase: at, bytes: at + CONST_POOL_BYTES }
}

/** `run(thread)`: claims chunks until none are left. */
function threadedModule(g: ElemGroup, T: ThreadedLayout, pages: number, pool: ConstPool): WebAssembly.Module {
  const { L } = T
  const c = new ElemCode(1, pool)
  const thread = 0
  const b = c.local(I32), len = c.local(I32), bytes = c.local(I32), nrows = c.local(I32)
  const at = c.local(I32), inChunk = c.local(I32), term = c.local(I32), sum = c.local(I32)
  // the chunk layout's single values sit at chunkBase: splat them from there
  const splats = singleSplats(c, { ...L, singleOff: T.chunkBase + L.singleOff })
  c.get(thread).i32(4 * L.padded).i32Mul().i32(T.termBase).i32Add().set(term)
  c.block().loop()
  c.i32(0).i32(1).i32AtomicAdd().tee(b).i32(T.chunks).i32GeU().brIf(1)
  // this chunk's elements: min(chunk, n - b * chunk)
  c.i32(L.n).get(b).i32(L.chunk).i32Mul().i32Sub().tee(len).i32(L.chunk).get(len).i32(L.chunk).i32LtU().select().set(len)
  c.get(len).i32(3).i32Add().i32(4).i32DivU().i32(16).i32Mul().set(bytes)
  c.get(b).i32(4 * L.chunk).i32Mul().set(at)
  c.i32(0).set(inChunk)
  if (g.rowSum) {
    c.get(len).i32(g.rowSum.width).i32DivU().set(nrows)
    c.get(b).i32((4 * L.chunk) / g.rowSum.width).i32Mul().i32(T.sums).i32Add().set(sum)
  }
  const A: ChunkAddressing = {
    at, whole: (w) => T.whole[w]!, out: (o) => T.outs[o]!,
    inChunk, row: (r) => T.chunkBase + (L.whole.length + r) * L.padded * 4, termBase: term, sumAt: sum,
    perRowAt: at, perRow: (r) => T.perRow[r]!,
  }
  emitChunk(c, g, L, A, splats, bytes, nrows)
  c.i32(0).i32(1).i32AtomicAdd(4).drop()
  // wake the calling thread if it waits for this chunk (else it sleeps out its 1 ms timeout)
  c.i32(4).i32(1).atomicNotify().drop()
  c.br(0)
  c.end().end()
  return new WebAssembly.Module(assemble(pages, [{ name: 'run', code: c }], true) as BufferSource)
}

/** Shared memory a threaded group may take (its operands and outputs whole); larger ones run chunked on the calling thread. */
const MAX_BYTES = 2 ** 30

/** Whether the group's whole operands and outputs fit one shared memory. */
export function threadedFits(g: ElemGroup, threads: number): boolean {
  return threadedLayout(g, threads).bytes <= MAX_BYTES
}

/**
 * The runner of one group on `threads` threads (the calling thread included). Until its workers
 * have started (LateWorkers: after the program's first call), and where they cannot start,
 * `first`, the group's one-thread runner (same bits), runs it; the shared memory (megabytes
 * written for the first time) and its module are made with the workers. Later calls share the
 * chunks with the workers.
 */
export function threadedElementwise(g: ElemGroup, threads: number, first: ElemRun, workers?: WorkerPool, calls?: ProgramCalls): { run: ElemRun; dispose(): Promise<void> } {
  const T = threadedLayout(g, threads)
  const { L } = T
  let inst: { memory: WebAssembly.Memory; module: WebAssembly.Module; run: (t: number) => void } | undefined
  const instance = () => {
    if (inst) return inst
    const pages = Math.ceil(T.bytes / 65536)
    const consts = new ConstPool(T.poolBase, CONST_POOL_BYTES)
    const module = threadedModule(g, T, pages, consts)
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    new Uint8Array(memory.buffer).set(consts.bytes, T.poolBase)
    const run = (new WebAssembly.Instance(module, { env: { memory } }).exports as { run: (t: number) => void }).run
    return (inst = { memory, module, run })
  }
  const late = new LateWorkers(() => {
    const { module, memory } = instance()
    return kernelThreads(workers, module, memory, threads - 1)
  }, calls)
  const outTypes = g.exprs.map((e) => e.type)
  const run: ElemRun = (B, outs) => {
    const pool = late.forCall()
    if (!pool) return first(B, outs)
    const { memory, run } = instance()
    const buf = memory.buffer
    const view = (t: ElemType | undefined, at: number, len: number) => (t === 'i32' ? new Int32Array(buf, at, len) : new Float32Array(buf, at, len))
    L.single.forEach((s, i) => view(L.types.get(s), T.chunkBase + L.singleOff + 16 * i, 1).set([B[s]![0]!]))
    L.rows.forEach((s, r) => {
      const v = B[s] as Float32Array, m = view(L.types.get(s), T.chunkBase + (L.whole.length + r) * L.padded * 4, L.padded)
      tileRow(m, 0, v, L.padded)
    })
    L.whole.forEach((s, w) => view(L.types.get(s), T.whole[w]!, L.n).set(B[s] as Float32Array))
    L.perRow.forEach(({ slot, inner }, r) => view(L.types.get(slot), T.perRow[r]!, L.n / inner).set(B[slot] as Float32Array))
    const ctrl = new Int32Array(buf, 0, 2)
    // the done counter first, the chunk counter last: a thread claims chunks only once the operands are in
    Atomics.store(ctrl, 1, 0)
    Atomics.store(ctrl, 0, 0)
    for (let t = 0; t < pool.count; t++) if (pool.posted(t) - pool.done(t) < QUEUE) pool.post(t, [t + 1, 0, 0, 0])
    run(0)
    const deadline = Date.now() + 60_000
    for (let done = Atomics.load(ctrl, 1); done < T.chunks; done = Atomics.load(ctrl, 1)) {
      for (let t = 0; t < pool.count; t++) pool.done(t) // throws if a worker failed
      if (Date.now() > deadline) throw new TesseraError('backend', 'fast.elementwise', 'the worker threads of an elementwise loop did not finish within 60 s')
      Atomics.wait(ctrl, 1, done, 1)
    }
    outTypes.forEach((t, o) => outs[o]!.set(view(t, T.outs[o]!, L.n)))
    if (g.rowSum) outs[outTypes.length]!.set(view(g.rowSum.term.type, T.sums, L.n / g.rowSum.width))
  }
  return { run, dispose: () => late.dispose() }
}
