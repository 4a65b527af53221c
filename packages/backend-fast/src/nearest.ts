import type { AnyTypedArray, EqnOf, Epilogue, NearestPattern, NearestTerm, Var } from '@tessera/core'
import { TesseraError, nearestDims } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import { assemble, relaxedSimdSupported } from './wasm/asm.js'
import type { Code } from './wasm/asm.js'
import { LateWorkers, kernelThreads } from './wasm/threads.js'
import type { ProgramCalls, WorkerPool } from './wasm/threads.js'
import { hasNodeWorkerThreads } from './host.js'
import type { PackKernel, TermKernel } from './nearest-operands.js'
import type { KernelRun } from './nearest-kernel.js'
import { packCode, packKernel, storedTransposeOf, termKernel } from './nearest-operands.js'
import { driverSource, exactKernelCode } from './nearest-kernel.js'
import type { Drive } from './nearest-kernel.js'
import type { ScreenKernelSpec, TailOp } from './nearest-screen.js'
import { AFFINE_FLAG, EXACT_FLAG, liftTail, SCREEN_FNS, SCREEN_STATE, dispatchCode, fnIndex, screenKernelCode, screenRangeExp, termsInRange } from './nearest-screen.js'
import { verdictsCode } from './nearest-verdicts.js'
import { codebookStatsCode, panelScaleCode, scaleCodebook, scaleRowsCode, screenShape } from './nearest-scale.js'
import { rowSquaresCode } from './nearest-terms.js'
import { affineSplit, affineVerdictsCode, writeAffine } from './nearest-affine.js'
import { nearestGeometry } from './nearest-geometry.js'
import type { Geometry } from './nearest-geometry.js'
import type { AffineSplit } from './nearest-affine.js'
import { MIN_CHUNK, Sweep } from './nearest-sweep.js'
import type { SweepStep } from './nearest-sweep.js'

/**
 * The nearest-code pattern: `argmin_j f(dot(a_i, b_:j), row terms_i, column terms_j)` over the
 * last axis, where `dot` is a rank-2 matmul used nowhere else and f is a chain of float32
 * add/sub/mul/div/max/min/neg/abs/sqrt. Distances are computed tile by tile in a WebAssembly
 * SIMD kernel and reduced to an argmin in registers, so the m x n distance matrix is never
 * stored. Row and column terms (for example |x|^2 and |c|^2) are any subexpressions that depend
 * on only one of the two axes; stored ones are copied, others evaluated by generated JS loops
 * (nearest-operands.ts).
 *
 * Numerics: every epilogue op is a float32 op, as in the reference; the dot products accumulate
 * in float32 in k order (the reference accumulates in float64), so indices can differ from the
 * reference only between candidates whose distances agree to float32 rounding of a k-term sum.
 * With relaxed SIMD (tuning `relaxed: true`, from the backend's relaxedSimd option through the
 * planner) each step is a fused multiply-add where the machine has FMA (one rounding instead of two; without FMA the engine may still round twice),
 * which changes the same float32 rounding, not the bound. NaN distances are tracked per lane so
 * that a NaN wins at its first index, as in the reference; ties go to the first index.
 *
 * Work split: rows are staged (copied into wasm memory with their row terms) in chunks by the
 * calling thread, which keeps a queue of QUEUE staged chunks per worker thread filled and
 * computes chunks itself in between; chunks shrink towards the end so the threads finish together.
 * Memory: packed B plus (1 + QUEUE * workers) chunk buffers of about 256 KiB of A each. B is
 * packed through its definition, so when it is only a transpose of a stored value (the
 * codebook's `cb.mT`) the planner need not store it: the packed copy is the only one (that
 * value's rows pass through one more buffer of about 256 KiB on their way into the panels).
 *
 * Screening (tuning `screen`, nearest-screen.ts): the chunks are first swept by an int16 kernel
 * that leaves each row one candidate (its answer), a few (their column chunks are computed here
 * by the float32 kernel, nearest-kernel.ts) or none it can trust; those rows are swept again in
 * float32 at the end, on every thread. The module's `run` dispatches between the two kernels, so
 * the workers need only the one export. Epilogues affine in the dot product (squared euclidean, a
 * dot, also clamped and under square roots) are screened by one value per distance instead of a
 * bound through the epilogue (nearest-affine.ts), in the calls whose constants allow it.
 */

type Epi = Epilogue
type Term = NearestTerm

/** Register tile and dot-loop shape of the kernel, and whether it uses relaxed SIMD's fused multiply-add. */
export interface NearestTuning {
  /** Rows per register tile. */
  readonly rows: number
  /** 4-lane column vectors per register tile (a column chunk is 4 * vecs columns). */
  readonly vecs: number
  /** Steps along k per dot-loop iteration (lowered to a divisor of k). */
  readonly unroll: number
  readonly relaxed: boolean
  /**
   * Screen codes with int16 dot products and compute in float32 only those the bounds cannot
   * rule out (nearest-screen.ts); the pattern must have a slope. Same indices either way.
   */
  readonly screen: boolean
}

/**
 * With fused multiply-adds 2x4, 4x2 and 3x3 tie; with separate multiplies and adds 3x3 spills;
 * every larger tile spills (TurboFan issues all of an iteration's loads before its
 * multiply-adds, so R + V + R*V vectors are live, and x64 has 15 to spare). For the same reason
 * unroll 1 beats 4: TurboFan unrolls the small loop itself without the spills. Measurements are
 * in bench/README.md.
 */
export const defaultTuning: NearestTuning = { rows: 2, vecs: 4, unroll: 1, relaxed: false, screen: false }

/** Below this many multiply-adds a run stays on the calling thread. */
const THREAD_MIN_WORK = 1 << 22
/** The step's module: what its sweeps read (SweepStep: geometry, memory, `run` and the float32 kernel, terms), and the rest of its exports. */
interface Instance extends SweepStep {
  /** Screening: the codebook's statistics (nearest-scale.ts). */
  readonly stats?: (out: number) => void
  /** The wasm pack of a stored B^T (see packCode), when B is one. */
  readonly pack?: (src: number, dst: number, cols: number) => void
  /** The worker threads (more than one thread), started late: see NearestStep.run. */
  readonly late?: LateWorkers
}

export class NearestStep {
  readonly m: number
  readonly n: number
  readonly k: number
  private readonly rowTerms: number[]
  private readonly colTerms: number[]
  /** Per term, how it is copied into a staged chunk (undefined: a row term the step sums from its rows). */
  private termKernels: (TermKernel | undefined)[] = []
  private slotA: number | undefined
  /** B^T's slot when B is the transpose of a stored value (packed in wasm), else B's JS pack loop. */
  private slotBT: number | undefined
  private pack: PackKernel | undefined
  private instance: Instance | undefined

  readonly select: EqnOf<'argmin'> | EqnOf<'argmax'>
  readonly matmul: EqnOf<'matmul'>
  private readonly epi: Epi
  private readonly terms: readonly Term[]
  private readonly slope: 1 | -1 | undefined
  /** What screening bounds: the epilogue, or where that is bounded, its part before a tail of square roots (liftTail). */
  private readonly screenEpi: Epi
  private readonly tail: readonly TailOp[]
  /** screenRangeExp of screenEpi: bounded epilogues compute one bound per distance. */
  private readonly range: number | undefined
  /** The epilogue split for affine screening (nearest-affine.ts), when the module has that kernel; used in the calls whose constants allow it. */
  private readonly split: AffineSplit | undefined

  constructor(
    pattern: NearestPattern,
    private readonly threads: number,
    /** `relaxed: true` needs an engine with relaxed SIMD (see relaxedSimdSupported). */
    private readonly tuning: NearestTuning = defaultTuning,
    /** Row terms (indices into the pattern's terms) that are the sum of squares of the rows and read nowhere else: computed here (nearest-terms.ts). */
    private readonly selfSquares: readonly number[] = [],
    /** The backend's worker threads (else the step starts workers of its own). */
    private readonly workers?: WorkerPool,
    /** The program's calls (else the step counts its own), and whether its workers start within the first (see run). */
    private readonly start: { readonly calls?: ProgramCalls; readonly atFirstCall?: boolean } = {},
  ) {
    if (tuning.rows < 1 || tuning.vecs < 1 || tuning.unroll < 1) throw new TesseraError('backend', 'fast.nearest', 'tile sizes must be positive')
    if (tuning.relaxed && !relaxedSimdSupported()) throw new TesseraError('backend', 'fast.nearest', 'relaxed SIMD was requested but this engine does not support it')
    const { select, matmul, epilogue, terms } = pattern
    if (tuning.screen && pattern.slope === undefined) throw new TesseraError('backend', 'fast.nearest', 'screening needs an epilogue monotone in the dot product')
    this.slope = pattern.slope
    this.select = select
    this.matmul = matmul
    this.epi = epilogue
    const lifted = liftTail(epilogue)
    const innerRange = screenRangeExp(lifted.inner)
    this.screenEpi = innerRange === undefined ? epilogue : lifted.inner
    this.tail = innerRange === undefined ? [] : lifted.tail
    this.range = innerRange
    this.terms = terms
    const { m, n, k } = nearestDims(pattern)
    this.m = m
    this.n = n
    this.k = k
    this.rowTerms = terms.flatMap((t, i) => (t.dep === 'row' ? [i] : []))
    this.colTerms = terms.flatMap((t, i) => (t.dep === 'col' ? [i] : []))
    this.split = tuning.screen ? affineSplit(lifted.inner, lifted.tail, this.colTerms) : undefined
  }

  private chunksToWorkers = 0

  /** Chunks handed to worker threads in the last call (tests see whether they took part). */
  get workerChunks(): number {
    return this.chunksToWorkers
  }

  /** Worker threads this step uses (0 before the first call has made them, or when one thread does it all). */
  get workerThreads(): number {
    return this.instance?.late?.current?.count ?? 0
  }

  /** Whether every worker thread has started. */
  get workersReady(): boolean {
    const threads = this.instance?.late?.current
    return !!threads && Array.from({ length: threads.count }, (_, w) => threads.ready(w)).every(Boolean)
  }

  /** Row terms this step sums from its own rows rather than reads (nearest-terms.ts). */
  get rowTermsSummed(): number {
    return this.selfSquares.length
  }

  /** Whether codes are screened in int16 before float32 (nearest-screen.ts). */
  get screened(): boolean {
    return this.tuning.screen
  }

  /** Whether the module screens affine epilogues by one value per distance (nearest-affine.ts). */
  get affineScreen(): boolean {
    return this.split !== undefined
  }

  /** Whether B is packed in wasm from the rows of a stored value (B is its transpose), else by a JS loop. */
  get packsStoredRows(): boolean {
    return this.slotBT !== undefined
  }

  /** Threads worth using for this size (the caller's thread counts as one). */
  private threadCount(chunk: number): number {
    // a host without worker threads (a browser, for now) runs every chunk on the calling thread
    if (!hasNodeWorkerThreads()) return 1
    return this.m * this.n * this.k >= THREAD_MIN_WORK ? Math.max(1, Math.min(this.threads, Math.ceil(this.m / MIN_CHUNK), Math.ceil((2 * this.m) / chunk))) : 1
  }

  /** Build the term loops once slots and buffer names are known. */
  prepare(env: EmitEnv & { slotOf(v: Var): number }): void {
    this.slotA = env.slotOf(this.matmul.inputs[0]!)
    const b = this.matmul.inputs[1]!
    this.slotBT = storedTransposeOf(b, env)
    this.pack = this.slotBT === undefined ? packKernel(b, this.n, 4 * this.tuning.vecs, env) : undefined
    this.termKernels = this.terms.map((t, i) => (this.selfSquares.includes(i) ? undefined : termKernel(t.v, t.dep, t.dep === 'row' ? this.m : this.n, env)))
  }

  private geometry(): Geometry {
    return nearestGeometry({
      m: this.m, n: this.n, k: this.k, tuning: this.tuning, rowTerms: this.rowTerms.length, colTerms: this.colTerms.length,
      affine: this.affineScreen, packsStoredRows: this.slotBT !== undefined, threads: (chunk) => this.threadCount(chunk),
    })
  }

  private module(): Instance {
    if (this.instance) return this.instance
    const g = this.geometry()
    const pages = Math.ceil(g.bytes / 65536)
    // screening: run dispatches to the float32 kernel or the screening one, which calls the row
    // and panel scaling; the functions go in SCREEN_FNS's order, which their calls index
    const screenFns = {
      run: () => dispatchCode(this.affineScreen), exact: () => this.exactCode(g), screen: () => screenKernelCode(this.screenSpec(g)), scaleRows: () => scaleRowsCode(this.k, g.chunk, g.info),
      stats: () => codebookStatsCode(this.k, g.npad, g.cw), panelScale: () => panelScaleCode(this.k, g.cw, g.info),
      verdicts: () => verdictsCode(this.screenSpec(g)), rowSquares: () => rowSquaresCode(this.k),
      screenAffine: () => screenKernelCode(this.screenSpec(g), true),
      verdictsAffine: () => affineVerdictsCode({ chunk: g.chunk, info: g.info, affineInfo: g.affineInfo, rowTerms: this.rowTerms.length, state: SCREEN_STATE, tail: this.split!.tail }),
    }
    // the affine functions are the last two: left out where the epilogue is not affine
    const names = this.affineScreen ? SCREEN_FNS : SCREEN_FNS.slice(0, -2)
    const kernels = g.t.screen ? names.map((name) => ({ name, code: screenFns[name]() })) : [{ name: 'run', code: this.exactCode(g) }]
    const funcs = [...kernels, ...(g.packCols > 0 ? [{ name: 'pack', code: packCode(this.k, g.cw) }] : [])]
    const module = new WebAssembly.Module(assemble(pages, funcs) as BufferSource)
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    const exports = new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as { run: KernelRun; exact?: KernelRun; pack?: NonNullable<Instance['pack']>; stats?: (out: number) => void }
    const kernel = exports.run
    const driver = driverSource(this.k, g.cw, g.npad)
    const drive = new Function('run', 'a0', 'a1', 'a2', 'a3', driver) as Drive
    const run = (rows: number, a: number, row: number, out: number) => drive(kernel, rows, a, row, out)
    const late = g.threads > 1 ? new LateWorkers(() => kernelThreads(this.workers, module, memory, g.threads - 1, driver), this.start.calls, this.start.atFirstCall) : undefined
    const made: Instance = {
      m: this.m, k: this.k, rowTerms: this.rowTerms, termKernels: this.termKernels,
      g, memory, run, exact: exports.exact ?? kernel, ...(exports.pack ? { pack: exports.pack } : {}),
      ...(exports.stats ? { stats: exports.stats } : {}), ...(late ? { late } : {}),
    }
    return (this.instance = made)
  }

  dispose(): Promise<void> {
    const late = this.instance?.late
    this.instance = undefined
    return late ? late.dispose() : Promise.resolve()
  }

  /** The float32 kernel for this pattern and geometry (nearest-kernel.ts). */
  private exactCode(g: Geometry): Code {
    return exactKernelCode({
      k: this.k, n: this.n, npad: g.npad, cw: g.cw, unroll: g.unroll, chunk: g.chunk, rows: g.t.rows, vecs: g.t.vecs, relaxed: g.t.relaxed,
      col: g.col, epi: this.epi, rowTerms: this.rowTerms, colTerms: this.colTerms,
    })
  }

  /** What the screening kernel and its verdicts are built from (nearest-screen.ts, nearest-verdicts.ts). */
  private screenSpec(g: Geometry): ScreenKernelSpec {
    return {
      k2: screenShape(this.k).k2, k: this.k, n: this.n, npad: g.npad, rows: g.t.rows, vecs: g.t.vecs, chunk: g.chunk, col: g.col,
      epi: this.screenEpi, tail: this.tail, slope: this.slope!, rowTerms: this.rowTerms, colTerms: this.colTerms, relaxed: g.t.relaxed,
      qaOffset: g.qa - g.a, scaleRowsFn: fnIndex('scaleRows'), panelScaleFn: fnIndex('panelScale'), verdictsFn: fnIndex('verdicts'),
      selfSquares: this.rowTerms.flatMap((t, ri) => (this.selfSquares.includes(t) ? [ri] : [])), rowSquaresFn: fnIndex('rowSquares'),
      info: g.info, range: this.range,
      ...(this.affineScreen ? { affine: { at: g.affineAt, info: g.affineInfo, verdictsFn: fnIndex('verdictsAffine') } } : {}),
    }
  }

  /**
   * The program's first call runs on the calling thread alone and the workers start after it
   * (LateWorkers), unless `start.atFirstCall`: the program's searches are long enough to repay
   * them within it.
   */
  run(B: AnyTypedArray[], out: Int32Array): void {
    const { n, k } = this
    this.chunksToWorkers = 0
    const { g, memory, pack, stats, late } = this.module()
    late?.forCall()
    const f32 = new Float32Array(memory.buffer)
    // B in contiguous panels [npad/cw][k][cw] so each column chunk streams sequentially
    if (pack) {
      const bt = B[this.slotBT!] as Float32Array
      for (let j0 = 0; j0 < n; j0 += g.packCols) {
        const cols = Math.min(g.packCols, n - j0)
        f32.set(bt.subarray(j0 * k, (j0 + cols) * k), g.packAt / 4)
        pack(g.packAt, j0 * k * 4, cols)
      }
    } else this.pack!(B, f32)
    this.colTerms.forEach((t, ci) => this.termKernels[t]!(B, f32, g.col / 4 + ci * g.npad, 0, n))
    if (!stats || !scaleCodebook(memory.buffer, k, g.npad, g.statsAt, g.info, stats)) {
      this.sweep(B, out, undefined, undefined, 0)
      return
    }
    const affine = this.split !== undefined && writeAffine(memory.buffer, this.split, this.rowTerms, this.colTerms, g.col / 4, n, g.npad, g.affineAt / 4, g.affineInfo)
    if (!affine && !termsInRange(f32, g.col / 4, this.colTerms.length, this.n, g.npad, this.range)) {
      this.sweep(B, out, undefined, undefined, 0)
      return
    }
    const full: number[] = []
    this.sweep(B, out, undefined, full, affine ? AFFINE_FLAG : 0)
    if (full.length > 0) this.sweep(B, out, Int32Array.from(full), undefined, 0)
  }

  /** Every row of A, or the rows listed in `only`, screened when `full` is given (nearest-sweep.ts). */
  private sweep(B: AnyTypedArray[], out: Int32Array, only: Int32Array | undefined, full: number[] | undefined, screenFlag: number): void {
    const instance = this.module()
    // with a screening module, `run` screens unless the row count carries EXACT_FLAG
    const flag = instance.g.t.screen && !full ? EXACT_FLAG : screenFlag
    const sweep = new Sweep(instance, B, this.slotA!, out, only, full, flag, instance.late?.current)
    sweep.all()
    this.chunksToWorkers += sweep.chunksToWorkers
  }
}
