import { TesseraError } from '@tessera/core'
import { nodeWorkerThreads } from '../host.js'
import { Code, I32, V128, assemble, uleb } from './asm.js'
import { ChainCode } from './simd-ops.js'
import { KernelThreads, QUEUE } from './threads.js'

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
 * (load32_splat) and the B row loaded as W/4 vectors. Sizes and strides are literals.
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

/** Register tile: R rows x W columns (R * W / 4 accumulators + W / 4 B vectors + 1 splat <= 16 registers). */
const TILE = { R: 4, W: 8 }
/**
 * k products per iteration of the inner loop. Not unrolled: every longer unroll was slower on V8
 * (bench/README.md, "TRAIN on backend-fast").
 */
const UNROLL = 1

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

/** Locals of one function holding GEMM bodies (every layout has the same register tile). */
interface Regs {
  readonly jb: number
  readonly bBase: number
  readonly i: number
  readonly aP: number
  readonly bP: number
  readonly cP: number
  readonly t: number
  readonly acc: readonly number[]
  readonly y: readonly number[]
  readonly x: number
}

function regsOf(c: Code): Regs {
  const V = TILE.W / 4
  return {
    jb: c.local(I32), bBase: c.local(I32), i: c.local(I32), aP: c.local(I32), bP: c.local(I32), cP: c.local(I32), t: c.local(I32),
    acc: Array.from({ length: TILE.R * V }, () => c.local(V128)),
    y: Array.from({ length: V }, () => c.local(V128)),
    x: c.local(V128),
  }
}

/** Panels p0 <= jb < p1 (locals holding the bounds) of one layout's product; `relaxed`: each step a relaxed multiply-add. */
function emitRun(c: Code, L: GemmLayout, g: Regs, p0: number, p1: number, relaxed: boolean): void {
  const { m, k, transA, W, R, nPad, direct, bOff, cOff } = L
  const V = W / 4
  const { jb, bBase, i, aP, bP, cP, t, acc, y, x } = g
  // strides in bytes: of A between rows r of a block and between consecutive t; of B between t
  const aRow = transA ? 4 : 4 * k
  const aT = transA ? 4 * m : 4
  const bT = direct ? 4 * nPad : 4 * W

  /** R x W products for one t, at offsets u * stride from the running pointers. */
  const step = (rows: number, u: number) => {
    for (let v = 0; v < V; v++) c.get(bP).vLoad(u * bT + 16 * v).set(y[v]!)
    for (let r = 0; r < rows; r++) {
      c.get(aP).vLoad32Splat(u * aT + r * aRow).set(x)
      for (let v = 0; v < V; v++) {
        if (relaxed) c.get(x).get(y[v]!).get(acc[r * V + v]!).f32x4RelaxedMadd().set(acc[r * V + v]!)
        else c.get(acc[r * V + v]!).get(x).get(y[v]!).f32x4Mul().f32x4Add().set(acc[r * V + v]!)
      }
    }
  }

  /** One block of `rows` rows at row i, panel starting at bBase, output at cP. */
  const block = (rows: number) => {
    for (let a = 0; a < rows * V; a++) c.vConstF32([0, 0, 0, 0]).set(acc[a]!)
    c.get(i).i32(transA ? 4 : 4 * k).i32Mul().set(aP)
    c.get(bBase).set(bP)
    const full = Math.floor(k / UNROLL)
    if (full > 0) {
      c.i32(full).set(t)
      c.loop()
      for (let u = 0; u < UNROLL; u++) step(rows, u)
      c.get(aP).i32(UNROLL * aT).i32Add().set(aP)
      c.get(bP).i32(UNROLL * bT).i32Add().set(bP)
      c.get(t).i32(1).i32Sub().tee(t).brIf(0)
      c.end()
    }
    for (let u = 0; u < k % UNROLL; u++) step(rows, u)
    for (let r = 0; r < rows; r++) for (let v = 0; v < V; v++) c.get(cP).get(acc[r * V + v]!).vStore(4 * r * nPad + 16 * v)
  }

  const fullBlocks = Math.floor(m / R), tail = m % R
  // an empty range computes nothing
  c.block()
  c.get(p1).get(p0).i32LeU().brIf(0)
  c.get(p0).set(jb)
  c.loop()
  // panel jb: B columns jb*W .. jb*W + W - 1
  c.get(jb).i32(direct ? 4 * W : 4 * W * k).i32Mul().i32(bOff).i32Add().set(bBase)
  c.get(jb).i32(4 * W).i32Mul().i32(cOff).i32Add().set(cP)
  c.i32(0).set(i)
  if (fullBlocks > 0) {
    c.loop()
    block(R)
    c.get(cP).i32(4 * R * nPad).i32Add().set(cP)
    c.get(i).i32(R).i32Add().tee(i).i32(fullBlocks * R).i32LtU().brIf(0)
    c.end()
  }
  if (tail > 0) block(tail)
  c.get(jb).i32(1).i32Add().tee(jb).get(p1).i32LtU().brIf(0)
  c.end()
  c.end()
}

/**
 * One module for every GEMM of a plan (worker threads instantiate one module): exported
 * `panels(which, p0, p1)` computes panels p0..p1-1 of layout `which`'s product, `pack(which)` packs
 * its transposed B, and `run(which, epoch, P)` claims panels one at a time from the counter at
 * `ctrl` (epoch << 16 | next panel) while its epoch is current, adding 1 to the word after it per
 * panel done. Panels write disjoint output columns, so threads may share a product that way: a
 * thread that comes late (a worker waiting for a core) finds nothing left and computes nothing.
 * `relaxed` (the engine must have relaxed SIMD): each product added by f32x4.relaxed_madd, a fused
 * multiply-add where the machine has one (rounded once instead of twice; the same order).
 */
export function gemmModule(layouts: readonly GemmLayout[], pages: number, shared: boolean, relaxed = false, ctrl = 0): WebAssembly.Module {
  const run = new Code(3)
  const regs = regsOf(run)
  layouts.forEach((L, w) => {
    // skip unless which == w
    run.block()
    run.get(0).i32(w).i32Sub().brIf(0)
    emitRun(run, L, regs, 1, 2, relaxed)
    run.end()
  })
  const pack = new Code(1)
  const pregs = packRegsOf(pack)
  layouts.forEach((L, w) => {
    if (!L.transB) return
    pack.block()
    pack.get(0).i32(w).i32Sub().brIf(0)
    emitPack(pack, L, pregs)
    pack.end()
  })
  const funcs = [{ name: 'panels', code: run }, { name: 'pack', code: pack }]
  // the claiming loop uses atomics: only in a shared memory
  if (shared) funcs.push({ name: 'run', code: claimCode(ctrl) })
  return new WebAssembly.Module(assemble(pages, funcs, shared) as BufferSource)
}

/** The two instructions the claiming loop needs beyond ChainCode's. */
class ClaimCode extends ChainCode {
  i32And() {
    this.bytes.push(0x71)
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
  const c = new ClaimCode(3)
  const old = c.local(I32), jb = c.local(I32)
  c.loop()
  c.block()
  c.i32(ctrl).i32AtomicLoad(0).set(old)
  // another epoch (a stale task, or none posted yet): stop
  c.get(old).i32(16).i32ShrU().get(1).i32Sub().brIf(0)
  c.get(old).i32(0xffff).i32And().tee(jb).get(2).i32GeU().brIf(0)
  // claim panel jb unless another thread took it first (then read the counter again)
  c.i32(ctrl).get(old).get(old).i32(1).i32Add().i32AtomicCmpxchg(0).get(old).i32Sub().brIf(1)
  c.get(0).get(jb).get(jb).i32(1).i32Add().call(0)
  c.i32(ctrl).i32(1).i32AtomicAdd(4).drop()
  c.br(1)
  c.end()
  c.end()
  return c
}

interface PackRegs {
  readonly pj: number
  readonly src: number
  readonly s: number
  readonly d: number
  readonly t: number
  readonly v: number
  readonly dPanel: number
}

function packRegsOf(c: Code): PackRegs {
  return { pj: c.local(I32), src: c.local(I32), s: c.local(I32), d: c.local(I32), t: c.local(I32), v: c.local(V128), dPanel: c.local(I32) }
}

/**
 * Packs a transposed B (n x k at rawOff) into panels at bOff: column j of B is row j of the
 * stored array, read 4 floats at a time and stored one lane per panel row; columns past n are 0.
 */
function emitPack(c: Code, L: GemmLayout, g: PackRegs): void {
  const { k, n, W, bOff, rawOff } = L
  const { pj, src, s, d, t, v, dPanel } = g
  const panelBytes = 4 * W * k
  /** Column `col` of the panel at d0 (a local holding its base) from the row at src + col * k * 4. */
  const column = (col: number, dBase: number) => {
    c.get(src).i32(4 * k * col).i32Add().set(s)
    c.get(dBase).set(d)
    const chunks = Math.floor(k / 4)
    if (chunks > 0) {
      c.i32(chunks).set(t)
      c.loop()
      c.get(s).vLoad(0).set(v)
      for (let u = 0; u < 4; u++) c.get(d).get(v).vStore32Lane(4 * col + 4 * W * u, u)
      c.get(s).i32(16).i32Add().set(s)
      c.get(d).i32(16 * W).i32Add().set(d)
      c.get(t).i32(1).i32Sub().tee(t).brIf(0)
      c.end()
    }
    // the last k % 4 rows: a 4-float load may read past the row, only the valid lanes are stored
    if (k % 4) {
      c.get(s).vLoad(0).set(v)
      for (let u = 0; u < k % 4; u++) c.get(d).get(v).vStore32Lane(4 * col + 4 * W * u, u)
    }
  }
  const full = Math.floor(n / W)
  c.i32(0).set(pj)
  if (full > 0) {
    c.loop()
    c.get(pj).i32(W * 4 * k).i32Mul().i32(rawOff).i32Add().set(src)
    c.get(pj).i32(panelBytes).i32Mul().i32(bOff).i32Add().set(dPanel)
    for (let col = 0; col < W; col++) column(col, dPanel)
    c.get(pj).i32(1).i32Add().tee(pj).i32(full).i32LtU().brIf(0)
    c.end()
  }
  if (n % W) {
    c.i32(full * W * 4 * k + rawOff).set(src)
    c.i32(full * panelBytes + bOff).set(dPanel)
    for (let col = 0; col < n % W; col++) column(col, dPanel)
    // zero columns past n (the memory is shared with other GEMMs)
    c.get(dPanel).set(d)
    c.i32(k).set(t)
    c.loop()
    for (let col = n % W; col < W; col++) c.get(d).vConstF32([0, 0, 0, 0]).vStore32Lane(4 * col, 0)
    c.get(d).i32(4 * W).i32Add().set(d)
    c.get(t).i32(1).i32Sub().tee(t).brIf(0)
    c.end()
  }
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
  const threaded = opts.threads > 1 && nodeWorkerThreads() !== undefined && layouts.some(splits)
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, ...(threaded ? { shared: true } : {}) })
  const module = gemmModule(layouts, pages, threaded, opts.relaxed ?? false, ctrl)
  const ex = new WebAssembly.Instance(module, { env: { memory } }).exports as {
    panels: (w: number, p0: number, p1: number) => void
    pack: (w: number) => void
    run?: (w: number, epoch: number, P: number) => void
  }
  const { panels: run, pack } = ex
  const worker = threaded ? new KernelThreads(module, memory, 1) : undefined
  const f32 = new Float32Array(memory.buffer)
  const i32 = new Int32Array(memory.buffer)
  let epoch = 0
  /** Panels 0..P-1 of product w shared with the worker: both claim them; waits only for panels the worker took. */
  const shared = (w: number, P: number) => {
    epoch = (epoch + 1) & 0x7fff
    Atomics.store(i32, (ctrl >> 2) + 1, 0)
    Atomics.store(i32, ctrl >> 2, epoch << 16)
    // a worker still busy with earlier tasks (stale ones end at once) gets none: the queue never overflows
    if (worker!.posted(0) - worker!.done(0) < QUEUE) worker!.post(0, [w, epoch, P, 0])
    ex.run!(w, epoch, P)
    // at most the panel the worker is computing is left (a failed worker throws from done())
    for (let i = 1; Atomics.load(i32, (ctrl >> 2) + 1) < P; i++) if ((i & 0xffff) === 0) worker!.done(0)
  }
  const runners = layouts.map((L, w): GemmRunner => {
    const { m, k, n, W, nPad, transB, direct } = L
    const b0 = L.bOff >> 2, c0 = L.cOff >> 2, raw0 = L.rawOff >> 2
    const P = panelsOf(L)
    const split = worker !== undefined && splits(L)
    const one = (a: Float32Array, b: Float32Array, out: Float32Array, aOff: number, bOffIn: number, oOff: number) => {
      f32.set(a.subarray(aOff, aOff + m * k), 0)
      if (direct) f32.set(b.subarray(bOffIn, bOffIn + k * n), b0)
      else if (transB) {
        f32.set(b.subarray(bOffIn, bOffIn + k * n), raw0)
        pack(w)
      } else packRows(f32, b0, b, bOffIn, k, n, nPad, W)
      if (split) shared(w, P)
      else run(w, 0, P)
      if (nPad === n) out.set(f32.subarray(c0, c0 + m * n), oOff)
      else for (let r = 0; r < m; r++) out.set(f32.subarray(c0 + r * nPad, c0 + r * nPad + n), oOff + r * n)
    }
    return {
      run(a, b, out, batch) {
        for (let t = 0; t < batch; t++) one(a, b, out, t * m * k, t * k * n, t * m * n)
      },
    }
  })
  return { runners, split: layouts.map((L) => worker !== undefined && splits(L)), dispose: () => (worker ? worker.dispose() : Promise.resolve()) }
}

/** B stored k x n (n not a multiple of W) into panels [panel][t][W] (columns past n zero). */
function packRows(dst: Float32Array, base: number, b: Float32Array, off: number, k: number, n: number, nPad: number, W: number): void {
  for (let t = 0; t < k; t++) {
    for (let j = 0; j < nPad; j++) dst[base + Math.floor(j / W) * W * k + t * W + (j % W)] = j < n ? b[off + t * n + j]! : 0
  }
}
