import { TesseraError } from '@tessera/core'
import { hasNodeWorkerThreads } from '../host.js'
import { Code, I32, V128, assemble, uleb } from './asm.js'
import { ChainCode } from './simd-ops.js'
import { LateWorkers, QUEUE, kernelThreads } from './threads.js'
import type { KernelThreads, ProgramCalls, WorkerPool } from './threads.js'

/**
 * A WebAssembly SIMD float32 GEMM for dense layers: out (m x n) = A (m x k) @ B (k x n), where A
 * and B may each be stored transposed (A as k x m, B as n x k: the forms autodiff produces for
 * x @ W^T and its gradients), so no transpose is materialized for it.
 *
 * Numerics: each output adds its k products in order (k ascending) in a float32 accumulator, as
 * PyTorch's and onnxruntime's CPU GEMMs do (no fused multiply-add): the error is a k-term float32
 * sum's, within the `accumulate` tolerance class, not the bit-exact float64 sum of the JS matmul.
 *
 * Layout (bytes, in one memory used by every GEMM of a plan; the products run one after another): A as
 * stored at 0; B as stored at `bOff` when its rows are read directly (not transposed, n a multiple
 * of the tile width), otherwise packed into panels of `W` columns (k rows of W floats, zero past
 * n) at `bOff`: a transposed B is copied to `rawOff` as stored and packed by the module's `pack`
 * (a 4-float load and four lane stores per step), other B's by the host; the output at `cOff`
 * with rows of `nPad` floats.
 *
 * Loops: panels of W columns outside (a panel of B stays in L1), blocks of R rows inside, the k
 * loop innermost with R x W/4 vector accumulators, the A element splat from memory
 * (load32_splat) and the B row loaded as W/4 vectors, one k step per iteration (every longer
 * unroll was slower on V8: bench/README.md, the dense-GEMM sections). The rows of a block are
 * read at literal offsets; the other sizes and strides are arguments (see panelsCode).
 */
export interface GemmShape {
  readonly m: number
  readonly k: number
  readonly n: number
  /** A is stored k x m (A[i, t] at t * m + i). */
  readonly transA: boolean
  /** B is stored n x k (B[t, j] at j * k + t). */
  readonly transB: boolean
}

export interface GemmLayout extends GemmShape {
  /** Columns per panel (4 per vector). */
  readonly W: number
  /** Rows per register block. */
  readonly R: number
  readonly nPad: number
  /** B read in place (row-major k x n) rather than from host-packed panels. */
  readonly direct: boolean
  readonly bOff: number
  readonly cOff: number
  /** Where a transposed B is copied as stored, for `pack` (transB only; else 0). */
  readonly rawOff: number
  /** Bytes the layout needs. */
  readonly bytes: number
}

/**
 * Iterations of the warm-up loops (see warmUp): enough for V8 to optimize each function once;
 * every further threshold crossed asks for another compile (bench/README.md, the GEMM's first call).
 */
const WARM_STEPS = { panels: 4096, pack: 8192 }

/** Register tile: R rows x W columns (R * W / 4 accumulators + W / 4 B vectors + 1 splat <= 16 registers). */
const TILE = { R: 4, W: 8 }

export function gemmLayout(s: GemmShape): GemmLayout {
  const { m, k, n } = s
  if (!(m >= 1 && k >= 1 && n >= 1)) throw new TesseraError('backend', 'fast.gemm', `GEMM sizes must be positive (got m = ${m}, k = ${k}, n = ${n})`)
  const { R, W } = TILE
  const nPad = Math.ceil(n / W) * W
  const direct = !s.transB && n % W === 0
  const align = (x: number) => Math.ceil(x / 16) * 16
  const bOff = align(4 * m * k)
  const cOff = align(bOff + 4 * k * nPad)
  // (16 bytes past the copy of a transposed B: `pack` reads whole vectors at a row's end)
  const rawOff = s.transB ? align(cOff + 4 * m * nPad) : 0
  return { ...s, W, R, nPad, direct, bOff, cOff, rawOff, bytes: s.transB ? rawOff + 4 * n * k + 16 : cOff + 4 * m * nPad }
}

/** Bytes between the rows of a block in A's stored layout: what a panels function is specialized on. */
const aRowOf = (L: GemmLayout): number => (L.transA ? 4 : 4 * L.k)

/** A panels function's arguments after p0 and p1, in order: the layout's sizes and byte strides (see panelsCode). */
const argsOf = (L: GemmLayout): number[] => [
  L.m,
  L.k,
  L.transA ? 4 * L.m : 4,
  L.direct ? 4 * L.nPad : 4 * L.W,
  L.direct ? 4 * L.W : 4 * L.W * L.k,
  L.bOff,
  L.cOff,
  4 * L.nPad,
]

/**
 * panels(p0, p1, m, k, aT, bT, bPanel, bOff, cOff, cRow) for every layout whose A rows lie `aRow`
 * bytes apart (aRowOf: every transposed A, or every A with the same k): panels p0 <= jb < p1 of
 * one product, the sizes and strides in bytes as arguments (argsOf): of A between consecutive t,
 * of B between t and between panels, of the output between rows. The row stride stays a literal
 * (the rows of a block are read at constant offsets from one pointer, as a layout's own code
 * would: with it an argument, the inner loop's extra pointer steps made the products slower,
 * bench/README.md). `tails`: the row counts (m % R) of its layouts' last blocks. `relaxed`: each
 * step a relaxed multiply-add.
 */
function panelsCode(relaxed: boolean, aRow: number, tails: readonly number[]): Code {
  const { R, W } = TILE
  const V = W / 4
  const c = new GemmCode(10)
  const [p0, p1, m, k, aT, bT, bPanel, bOff, cOff, cRow] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
  const jb = c.local(I32), bBase = c.local(I32), i = c.local(I32), aP = c.local(I32), bP = c.local(I32), cP = c.local(I32), t = c.local(I32)
  const acc = Array.from({ length: R * V }, () => c.local(V128))
  const y = Array.from({ length: V }, () => c.local(V128))
  const x = c.local(V128)

  /** One block of `rows` rows at row i of the panel at bBase, output at cP: the k loop innermost. */
  const block = (rows: number) => {
    for (let a = 0; a < rows * V; a++) c.vConstF32([0, 0, 0, 0]).set(acc[a]!)
    c.get(i).i32(aRow).i32Mul().set(aP)
    c.get(bBase).set(bP)
    c.get(k).set(t)
    c.loop()
    for (let v = 0; v < V; v++) c.get(bP).vLoad(16 * v).set(y[v]!)
    for (let r = 0; r < rows; r++) {
      c.get(aP).vLoad32Splat(r * aRow).set(x)
      for (let v = 0; v < V; v++) {
        if (relaxed) c.get(x).get(y[v]!).get(acc[r * V + v]!).f32x4RelaxedMadd().set(acc[r * V + v]!)
        else c.get(acc[r * V + v]!).get(x).get(y[v]!).f32x4Mul().f32x4Add().set(acc[r * V + v]!)
      }
    }
    c.get(aP).get(aT).i32Add().set(aP)
    c.get(bP).get(bT).i32Add().set(bP)
    c.get(t).i32(1).i32Sub().tee(t).brIf(0)
    c.end()
    for (let r = 0; r < rows; r++) {
      // the row's output address in bP (free after the k loop)
      if (r === 0) c.get(cP).set(bP)
      else c.get(bP).get(cRow).i32Add().set(bP)
      for (let v = 0; v < V; v++) c.get(bP).get(acc[r * V + v]!).vStore(16 * v)
    }
  }

  // an empty range computes nothing
  c.block()
  c.get(p1).get(p0).i32LeU().brIf(0)
  c.get(p0).set(jb)
  c.loop()
  c.get(jb).get(bPanel).i32Mul().get(bOff).i32Add().set(bBase)
  c.get(jb).i32(4 * W).i32Mul().get(cOff).i32Add().set(cP)
  c.i32(0).set(i)
  // whole blocks of R rows while i + R <= m
  c.block()
  c.get(m).i32(R).i32LtU().brIf(0)
  c.loop()
  block(R)
  c.get(cP).get(cRow).i32(R).i32Mul().i32Add().set(cP)
  c.get(i).i32(R).i32Add().tee(i).i32(R).i32Add().get(m).i32LeU().brIf(0)
  c.end()
  c.end()
  // the last m % R rows (only the counts its layouts have: a smaller function is optimized sooner)
  for (const rows of tails) {
    c.get(m).get(i).i32Sub().i32(rows).i32Eq().ifThen()
    block(rows)
    c.end()
  }
  c.get(jb).i32(1).i32Add().tee(jb).get(p1).i32LtU().brIf(0)
  c.end()
  c.end()
  return c
}

/** Function indices in a GEMM module: the two dispatchers by layout, the pack every layout calls, one panels function per A row stride (and `run` last). */
const FN = { panels: 0, pack: 1, packAny: 2, firstPanels: 3 } as const

/**
 * One module for every GEMM of a plan (worker threads instantiate one module): exported
 * `panels(which, p0, p1)` computes panels p0..p1-1 of layout `which`'s product, `pack(which)` packs
 * its transposed B, and `run(which, epoch, P)` claims panels one at a time from the counter at
 * `ctrl` (epoch << 16 | next panel) while its epoch is current, adding 1 to the word after it per
 * panel done. Panels write disjoint output columns, so threads may share a product that way: a
 * thread that comes late (a worker waiting for a core) finds nothing left and computes nothing.
 * `relaxed` (the engine must have relaxed SIMD): each product added by f32x4.relaxed_madd, a fused
 * multiply-add where the machine has one (rounded once instead of twice; the same order).
 *
 * The dispatchers pass each layout's sizes to one pack function and to a panels function shared
 * by every layout with the same A row stride (a training step's dense layers need three): V8
 * starts a module in baseline code, optimizes a function once it has run a while, in the
 * background, and swaps it in at the function's next call. A small function is optimized soon,
 * and warmUp gets that done before the first product; one function holding every layout's own
 * code was optimized only after the first products had run in baseline code (bench/README.md,
 * the GEMM's first call).
 */
export function gemmModule(layouts: readonly GemmLayout[], pages: number, shared: boolean, relaxed = false, ctrl = 0): WebAssembly.Module {
  // a panels function per A row stride, with the row tails (m % R) of its layouts
  const strides = [...new Set(layouts.map(aRowOf))]
  const tailsOf = strides.map((aRow) => [...new Set(layouts.filter((L) => aRowOf(L) === aRow && L.m % L.R > 0).map((L) => L.m % L.R))].sort())
  const panels = new GemmCode(3)
  const pack = new GemmCode(1)
  layouts.forEach((L, w) => {
    // skip unless which == w
    panels.block().get(0).i32(w).i32Sub().brIf(0).get(1).get(2)
    for (const v of argsOf(L)) panels.i32(v)
    panels.call(FN.firstPanels + strides.indexOf(aRowOf(L))).end()
    if (L.transB) pack.block().get(0).i32(w).i32Sub().brIf(0).i32(L.k).i32(L.n).i32(L.rawOff).i32(L.bOff).call(FN.packAny).end()
  })
  const funcs = [
    { name: 'panels', code: panels as Code },
    { name: 'pack', code: pack },
    { name: 'packAny', code: packCode() },
    ...strides.map((aRow, i) => ({ name: `${PANELS_PREFIX}${aRow}${tailsOf[i]!.length ? `t${tailsOf[i]!.join('')}` : ''}`, code: panelsCode(relaxed, aRow, tailsOf[i]!) })),
  ]
  // the claiming loop uses atomics: only in a shared memory
  if (shared) funcs.push({ name: 'run', code: claimCode(ctrl) })
  return new WebAssembly.Module(assemble(pages, funcs, shared) as BufferSource)
}

/** The instructions the claiming loop and the pack need beyond ChainCode's. */
class GemmCode extends ChainCode {
  i32And() {
    this.bytes.push(0x71)
    return this
  }
  i32Eqz() {
    this.bytes.push(0x45)
    return this
  }
  i32Eq() {
    this.bytes.push(0x46)
    return this
  }
  /** i32.atomic.rmw.cmpxchg: address, expected, replacement on the stack; the old value left. */
  i32AtomicCmpxchg(offset: number) {
    this.bytes.push(0xfe, 0x48, 2, ...uleb(offset))
    return this
  }
}

/** run(which, epoch, P): claims panels of the current epoch (see gemmModule) and computes each by calling `panels` (function 0). */
function claimCode(ctrl: number): Code {
  const c = new GemmCode(3)
  const old = c.local(I32), jb = c.local(I32)
  c.loop()
  c.block()
  c.i32(ctrl).i32AtomicLoad(0).set(old)
  // another epoch (a stale task, or none posted yet): stop
  c.get(old).i32(16).i32ShrU().get(1).i32Sub().brIf(0)
  c.get(old).i32(0xffff).i32And().tee(jb).get(2).i32GeU().brIf(0)
  // claim panel jb unless another thread took it first (then read the counter again)
  c.i32(ctrl).get(old).get(old).i32(1).i32Add().i32AtomicCmpxchg(0).get(old).i32Sub().brIf(1)
  c.get(0).get(jb).get(jb).i32(1).i32Add().call(FN.panels)
  c.i32(ctrl).i32(1).i32AtomicAdd(4).drop()
  c.br(1)
  c.end()
  c.end()
  return c
}

/**
 * packAny(k, n, raw, dst): packs a transposed B (n x k floats at `raw`) into panels of W columns
 * at `dst` ([panel][t][W]): column j of B is row j of the stored array, read 4 floats at a time
 * and stored one lane per panel row; the columns past n up to the panel's end are zeroed (the
 * memory is shared with other GEMMs). The last k % 4 rows of a column load a whole vector, which
 * may read up to 12 bytes past the stored array (the layout leaves 16).
 */
function packCode(): Code {
  const { W } = TILE
  const c = new GemmCode(4)
  const [k, n, raw, dst] = [0, 1, 2, 3]
  const j = c.local(I32), s = c.local(I32), d = c.local(I32), t = c.local(I32), rem = c.local(I32), v = c.local(V128)
  /** d = dst + 4 (panel(j) W k + j % W). */
  const columnBase = () => c.get(j).i32(Math.log2(W)).i32ShrU().i32(W).i32Mul().get(k).i32Mul().get(j).i32(W - 1).i32And().i32Add().i32(4).i32Mul().get(dst).i32Add().set(d)
  // nothing for n = 0; the branch ends at the function's end
  c.block()
  c.get(n).i32Eqz().brIf(0)
  c.get(k).i32(3).i32And().set(rem)
  c.i32(0).set(j)
  c.loop()
  c.get(j).get(k).i32Mul().i32(4).i32Mul().get(raw).i32Add().set(s)
  columnBase()
  c.block()
  c.get(k).i32(2).i32ShrU().tee(t).i32Eqz().brIf(0)
  c.loop()
  c.get(s).vLoad(0).set(v)
  for (let u = 0; u < 4; u++) c.get(d).get(v).vStore32Lane(4 * W * u, u)
  c.get(s).i32(16).i32Add().set(s)
  c.get(d).i32(16 * W).i32Add().set(d)
  c.get(t).i32(1).i32Sub().tee(t).brIf(0)
  c.end()
  c.end()
  c.get(rem).ifThen()
  c.get(s).vLoad(0).set(v)
  c.get(d).get(v).vStore32Lane(0, 0)
  c.get(rem).i32(1).i32GtU().ifThen().get(d).get(v).vStore32Lane(4 * W, 1).end()
  c.get(rem).i32(2).i32GtU().ifThen().get(d).get(v).vStore32Lane(8 * W, 2).end()
  c.end()
  c.get(j).i32(1).i32Add().tee(j).get(n).i32LtU().brIf(0)
  c.end()
  // j = n: zero the columns up to the next multiple of W
  c.block()
  c.get(j).i32(W - 1).i32And().i32Eqz().brIf(0)
  c.loop()
  columnBase()
  c.get(k).set(t)
  c.loop()
  c.get(d).f32Const(0).f32Store(0)
  c.get(d).i32(4 * W).i32Add().set(d)
  c.get(t).i32(1).i32Sub().tee(t).brIf(0)
  c.end()
  c.get(j).i32(1).i32Add().tee(j).i32(W - 1).i32And().brIf(0)
  c.end()
  c.end()
  c.end()
  return c
}

/** Export names of the panels functions (the A row stride follows). */
const PANELS_PREFIX = 'panelsRow'

/**
 * Runs the pack and every panels function of a GEMM module's exports over columns and panels of
 * no rows (no memory is read or written). V8 counts a baseline function's loop iterations, each
 * by the loop's code size, toward optimizing it: it then optimizes them in the background before
 * the first product, instead of after that product's first panels ran in baseline code.
 */
export function warmUp(ex: WebAssembly.Exports): void {
  for (const [name, f] of Object.entries(ex)) {
    if (name.startsWith(PANELS_PREFIX)) (f as (...a: number[]) => void)(0, WARM_STEPS.panels, 0, 0, 0, 0, 0, 0, 0, 0)
  }
  ;(ex['packAny'] as (k: number, n: number, raw: number, dst: number) => void)(0, WARM_STEPS.pack, 0, 0)
}

export interface GemmRunner {
  /** out = A @ B per batch, operands stored (batch first) as the layout says, out row-major (batch, m, n). */
  run(a: Float32Array, b: Float32Array, out: Float32Array, batch: number): void
}

export interface GemmSetOptions {
  /** Threads a product may be split over, counting the calling thread (worker threads only where the host has them). */
  readonly threads: number
  /** Multiply-adds (m·k·n) from which a product is split over the threads. */
  readonly threadMinMacs: number
  /** Relaxed SIMD's multiply-add in the inner loop (the engine must have it). */
  readonly relaxed?: boolean
  /** The backend's worker threads (else the set starts a worker of its own). */
  readonly pool?: WorkerPool
  /** The program's calls: the worker starts after the first (LateWorkers; without them, after the set's first split product). */
  readonly calls?: ProgramCalls
}

/**
 * The kernels for a plan's GEMMs, sharing one memory sized by the largest layout (the plan's
 * matmuls run one after another, and each call copies its operands in). With a second thread a
 * large product's panels are shared: the calling thread copies in and packs, posts a task to the
 * worker, claims panels itself until none is left, waits for any the worker is still computing,
 * and copies the result out. Which thread computes a panel does not change its values (each
 * output's sum is the same).
 */
export function gemmSet(
  layouts: readonly GemmLayout[],
  opts: GemmSetOptions = { threads: 1, threadMinMacs: Infinity },
): { runners: GemmRunner[]; /** Which products are split over two threads. */ split: boolean[]; dispose(): Promise<void> } {
  if (layouts.length === 0) return { runners: [], split: [], dispose: () => Promise.resolve() }
  // the claim counter and the panels-done count after the largest layout
  const ctrl = Math.ceil(Math.max(...layouts.map((L) => L.bytes)) / 16) * 16
  const pages = Math.max(1, Math.ceil((ctrl + 16) / 65536))
  const panelsOf = (L: GemmLayout) => L.nPad / L.W
  const splits = (L: GemmLayout) => L.m * L.k * L.n >= opts.threadMinMacs && panelsOf(L) >= 2 && panelsOf(L) < 0x10000
  // a worker only where the host has worker threads and some product is worth splitting; else an
  // unshared memory (the calling thread alone; a browser page needs no cross-origin isolation)
  const threaded = opts.threads > 1 && hasNodeWorkerThreads() && layouts.some(splits)
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, ...(threaded ? { shared: true } : {}) })
  const module = gemmModule(layouts, pages, threaded, opts.relaxed ?? false, ctrl)
  const ex = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as {
    panels: (w: number, p0: number, p1: number) => void
    pack: (w: number) => void
    run?: (w: number, epoch: number, P: number) => void
  }
  warmUp(ex as unknown as WebAssembly.Exports)
  const { panels: run, pack } = ex
  const late = threaded ? new LateWorkers(() => kernelThreads(opts.pool, module, memory, 1), opts.calls) : undefined
  const f32 = new Float32Array(memory.buffer)
  const i32 = new Int32Array(memory.buffer)
  let epoch = 0
  /** Panels 0..P-1 of product w shared with the worker: both claim them; waits only for panels the worker took. */
  const shared = (w: number, P: number, worker: KernelThreads) => {
    epoch = (epoch + 1) & 0x7fff
    Atomics.store(i32, (ctrl >> 2) + 1, 0)
    Atomics.store(i32, ctrl >> 2, epoch << 16)
    // a worker still busy with earlier tasks (stale ones end at once) gets none: the queue never overflows
    if (worker.posted(0) - worker.done(0) < QUEUE) worker.post(0, [w, epoch, P, 0])
    ex.run!(w, epoch, P)
    // at most the panel the worker is computing is left (a failed worker throws from done())
    for (let i = 1; Atomics.load(i32, (ctrl >> 2) + 1) < P; i++) if ((i & 0xffff) === 0) worker.done(0)
  }
  const runners = layouts.map((L, w): GemmRunner => {
    const { m, k, n, W, nPad, transB, direct } = L
    const b0 = L.bOff >> 2, c0 = L.cOff >> 2, raw0 = L.rawOff >> 2
    const P = panelsOf(L)
    const split = late !== undefined && splits(L)
    let cold = true
    const one = (a: Float32Array, b: Float32Array, out: Float32Array, aOff: number, bOffIn: number, oOff: number) => {
      f32.set(a.subarray(aOff, aOff + m * k), 0)
      if (direct) f32.set(b.subarray(bOffIn, bOffIn + k * n), b0)
      else if (transB) {
        f32.set(b.subarray(bOffIn, bOffIn + k * n), raw0)
        pack(w)
      } else packRows(f32, b0, b, bOffIn, k, n, nPad, W)
      const worker = split ? late!.forCall() : undefined
      if (worker) shared(w, P, worker)
      else if (cold) {
        // the first product in calls of 1, 2, 4, ... panels: V8's optimized code for a function
        // takes over at its next call (should the warm-up not have got it optimized yet)
        cold = false
        for (let p0 = 0, c = 1; p0 < P; p0 += c, c *= 2) run(w, p0, Math.min(P, p0 + c))
      } else run(w, 0, P)
      if (nPad === n) out.set(f32.subarray(c0, c0 + m * n), oOff)
      else for (let r = 0; r < m; r++) out.set(f32.subarray(c0 + r * nPad, c0 + r * nPad + n), oOff + r * n)
    }
    return {
      run(a, b, out, batch) {
        for (let t = 0; t < batch; t++) one(a, b, out, t * m * k, t * k * n, t * m * n)
      },
    }
  })
  return { runners, split: layouts.map((L) => late !== undefined && splits(L)), dispose: () => (late ? late.dispose() : Promise.resolve()) }
}

/** B stored k x n (n not a multiple of W) into panels [panel][t][W] (columns past n zero). */
function packRows(dst: Float32Array, base: number, b: Float32Array, off: number, k: number, n: number, nPad: number, W: number): void {
  for (let t = 0; t < k; t++) {
    for (let j = 0; j < nPad; j++) dst[base + Math.floor(j / W) * W * k + t * W + (j % W)] = j < n ? b[off + t * n + j]! : 0
  }
}
