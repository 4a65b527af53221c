import type { AnyTypedArray, Backend, Caps, Executable, HostTensor, Program, RunOptions } from '@tessera/core'
import { TesseraError, allocate, applyPrim, asTesseraError, checkIntoOrThrow, disposedError, sizeOf } from '@tessera/core'
import { hardwareThreads, hasNodeWorkerThreads } from './host.js'
import { matmulF64 } from './matmul.js'
import type { Plan } from './plan.js'
import { planProgram } from './plan.js'
import { relaxedSimdSupported } from './wasm/asm.js'
import { WorkerPool } from './wasm/threads.js'

export interface FastBackendOptions {
  /** Use the WebAssembly SIMD nearest-code kernel where the pattern appears (default true). */
  readonly wasm?: boolean
  /** Threads for the WebAssembly kernel and for heavy row-blocked loops, counting the calling thread (default: available cores). */
  readonly threads?: number
  /**
   * Fused multiply-add (relaxed SIMD's f32x4.relaxed_madd) in the nearest-code kernel's dot
   * products and the dense GEMM: 'auto' (default) uses it where the engine has relaxed SIMD (Node >= 22, Chrome >=
   * 114; Node 20 with --experimental-wasm-relaxed-simd); true requires it. Each product-sum is
   * then rounded once instead of twice, so distances and products differ by float32 rounding (indices only
   * between near-ties).
   */
  readonly relaxedSimd?: 'auto' | boolean
  /** Rows per block of row-blocked chains (default: chosen by size; see PlanOptions.blockRows). */
  readonly blockRows?: number
  /**
   * Row chains compiled to one WebAssembly module each (float32x4 lanes, row by row; default true
   * with `wasm`). Not bit-identical to the reference: see wasm/chain-codegen.ts. False keeps the
   * generated JS kernels, which are.
   */
  readonly wasmChains?: boolean
  /** Multiply-adds from which a matmul runs as the float32 WebAssembly GEMM (default: see PlanOptions.gemmMinMacs). */
  readonly gemmMinMacs?: number
  /**
   * Screen nearest-code searches with int16 dot products before float32 (default true): codes
   * whose bounded distance cannot win are never computed in float32. The indices are the float32
   * kernel's, bit for bit; false computes every distance in float32.
   */
  readonly nearestScreen?: boolean
  /**
   * Elementwise passes gather the rows of a gather they alone read (a residual quantizer's codes)
   * instead of the gather being stored (default true). Same bits either way; false stores it.
   */
  readonly gatherInPasses?: boolean
}

/**
 * The generated loops round every op to float32 and sum in float64 in the reference's order, so
 * they are bit-identical to the reference except for tanh, exp and log (float64 series and
 * tables, see fastmath.ts: at most one float32 ulp, rarely: a few in a million arguments). The WebAssembly kernels
 * (nearest-code search, dense GEMMs) accumulate dot products in float32, so a float that depends
 * on one carries a k-term float32 sum's error, and indices agree except between near-ties. Row
 * chains compiled to one WebAssembly module (wasm/chain-codegen.ts) use float32 exp and log of at
 * most one ulp (relative error below 2^-23) and float64 sums in another association.
 */
export const fastCaps: Caps = {
  exactIntLimit: 2 ** 31,
  strictNaN: true,
  maxKernelArgs: Infinity,
  maxTextureSize: Infinity,
  atol: 1e-5,
  rtol: 1e-5,
  transcendentalRtol: 2 ** -23,
  fuses: true,
}

/** Compiles programs to generated JS loops (fused) plus a WebAssembly SIMD kernel for distance+argmin. */
export function fastBackend(opts: FastBackendOptions = {}): Backend & { readonly threadsNote?: string; readonly workerThreads: number } {
  const wasm = opts.wasm ?? true
  // worker threads are Node's: elsewhere (a browser) every kernel runs on the calling thread
  const threadsNote = hasNodeWorkerThreads() ? undefined : 'no Node worker threads in this host (a browser): running on one thread'
  const threads = threadsNote ? 1 : Math.max(1, Math.floor(opts.threads ?? hardwareThreads()))
  if (opts.relaxedSimd !== undefined && opts.relaxedSimd !== 'auto' && typeof opts.relaxedSimd !== 'boolean')
    throw new TesseraError('backend', 'fastBackend', `relaxedSimd must be 'auto', true or false, got ${JSON.stringify(opts.relaxedSimd)}`)
  if (opts.nearestScreen !== undefined && typeof opts.nearestScreen !== 'boolean')
    throw new TesseraError('backend', 'fastBackend', `nearestScreen must be true or false, got ${JSON.stringify(opts.nearestScreen)}`)
  if (opts.gatherInPasses !== undefined && typeof opts.gatherInPasses !== 'boolean')
    throw new TesseraError('backend', 'fastBackend', `gatherInPasses must be true or false, got ${JSON.stringify(opts.gatherInPasses)}`)
  // the engine is asked only where the answer matters: the probe builds a module, cold code in a fresh process
  const canRelax = opts.relaxedSimd === true || (wasm && opts.relaxedSimd !== false) ? relaxedSimdSupported() : false
  if (opts.relaxedSimd === true && !canRelax)
    throw new TesseraError('backend', 'fastBackend', 'relaxedSimd: true, but this engine has no relaxed SIMD (Node 20 needs --experimental-wasm-relaxed-simd)')
  const relaxed = wasm && opts.relaxedSimd !== false && canRelax
  const name = wasm ? `fast-js+wasm${relaxed ? '-relaxed' : ''}(${threads}t)` : 'fast-js'
  let disposed = false
  // executables not yet disposed: the backend's dispose frees their kernels
  const live = new Set<FastExecutable>()
  // one set of worker threads for all of this backend's kernels, started by the first that needs it
  const workers = wasm && threads > 1 ? new WorkerPool(threads - 1) : undefined
  return {
    name,
    caps: fastCaps,
    ...(threadsNote ? { threadsNote } : {}),
    /** Worker threads this backend has started (shared by all its programs' kernels; 0 until one needs them). */
    get workerThreads() {
      return workers?.started ?? 0
    },
    compile(program: Program): Executable {
      if (disposed) throw disposedError(name)
      try {
        const plan = planProgram(program, {
          wasm, threads, relaxedSimd: relaxed, ...(workers ? { workers } : {}),
          ...(opts.blockRows !== undefined ? { blockRows: opts.blockRows } : {}),
          ...(opts.wasmChains !== undefined ? { wasmChains: opts.wasmChains } : {}),
          ...(opts.gemmMinMacs !== undefined ? { gemmMinMacs: opts.gemmMinMacs } : {}),
          ...(opts.nearestScreen !== undefined ? { nearestScreen: opts.nearestScreen } : {}),
          ...(opts.gatherInPasses !== undefined ? { gatherInPasses: opts.gatherInPasses } : {}),
        })
        const exe: FastExecutable = new FastExecutable(plan, () => disposed, name, () => live.delete(exe))
        live.add(exe)
        return exe
      } catch (e) {
        throw asTesseraError(e, 'fast.compile', 'backend')
      }
    },
    async dispose() {
      disposed = true
      await Promise.all([...live].map((e) => e.dispose()))
      await workers?.dispose()
    },
  }
}

class FastExecutable implements Executable {
  /** Intermediate buffers kept between runs (outputs are fresh each run: callers own them). */
  private scratch: (AnyTypedArray | undefined)[]
  /** Buffers that slots with disjoint lifetimes take turns on (the plan's scratchOf). */
  private shared: (AnyTypedArray | undefined)[] = []
  private readonly isOut: boolean[]
  private disposed = false

  constructor(
    private readonly plan: Plan,
    private readonly backendDisposed: () => boolean,
    private readonly backendName: string,
    private readonly forget: () => void,
  ) {
    this.scratch = new Array(plan.slots).fill(undefined)
    this.isOut = new Array(plan.slots).fill(false)
    for (const s of plan.outputSlots) this.isOut[s] = true
  }

  /** Kernel sources, in step order (for tests and debugging). */
  get kernelCount(): number {
    return this.plan.steps.length
  }

  run(inputs: readonly HostTensor[], options?: RunOptions): Promise<HostTensor[]> {
    try {
      return Promise.resolve(this.runSync(inputs, options?.into))
    } catch (e) {
      // code that also runs on worker threads (rebuilt from source there) throws plain Errors
      return Promise.reject(asTesseraError(e, 'fast.run', 'backend'))
    }
  }

  runSync(inputs: readonly HostTensor[], into?: RunOptions['into']): HostTensor[] {
    if (this.backendDisposed()) throw disposedError(this.backendName)
    if (this.disposed) throw new TesseraError('backend', 'fast.run', 'the executable was disposed')
    const { plan } = this
    const given = this.intoSlots(inputs, into)
    plan.calls.begin()
    const B = new Array<AnyTypedArray>(plan.slots)
    plan.inputSlots.forEach((s, i) => (B[s] = inputs[i]!.data))
    const alloc = (slot: number): AnyTypedArray => {
      const v = plan.slotVars[slot]!
      if (this.isOut[slot]) return given?.get(slot) ?? allocate(v.aval.dtype, sizeOf(v.aval.shape))
      const shared = this.plan.scratchOf[slot]!
      if (shared >= 0) return (this.shared[shared] ??= allocate(v.aval.dtype, sizeOf(v.aval.shape)))
      let a = this.scratch[slot]
      if (!a) a = this.scratch[slot] = allocate(v.aval.dtype, sizeOf(v.aval.shape))
      return a
    }
    for (const st of plan.steps) {
      switch (st.kind) {
        case 'kernel':
          B[st.out] = alloc(st.out)
          if (st.sideOuts) for (const s of st.sideOuts) B[s] = alloc(s)
          st.kernel.fn(B)
          break
        case 'matmul': {
          const out = alloc(st.out) as Float32Array
          const [batch, m, k, n] = st.dims
          if (st.gemm) st.gemm.run(B[st.a] as Float32Array, B[st.b] as Float32Array, out, batch)
          else matmulF64(B[st.a] as Float32Array, B[st.b] as Float32Array, out, batch, m, k, n)
          B[st.out] = out
          break
        }
        case 'elem':
          st.run(B, st.outs.map((s) => (B[s] = alloc(s)) as Float32Array))
          break
        case 'nearest': {
          const out = alloc(st.out) as Int32Array
          st.step.run(B, out)
          B[st.out] = out
          break
        }
        case 'rows':
          st.chain.run(B, alloc)
          break
        case 'map': {
          const out = alloc(st.out) as Float32Array
          st.run(B[st.in] as Float32Array, st.rows.map((s) => B[s] as Float32Array), out, out.length, st.width)
          B[st.out] = out
          break
        }
        case 'reference': {
          const ins = st.ins.map((s) => {
            const v = plan.slotVars[s]!
            return { shape: v.aval.shape, dtype: v.aval.dtype, data: B[s]! } as HostTensor
          })
          B[st.out] = applyPrim(st.eqn.prim, ins, st.eqn.params as never, st.eqn.out.aval).data
          break
        }
      }
    }
    return plan.outputSlots.map((s, i) => {
      const v = plan.slotVars[s]!
      const target = into?.[i]?.data
      // an output the steps did not write into its given array (an input returned, a repeated output, a step of the reference) is copied there
      if (target) {
        if (target !== B[s]) (target as Float32Array).set(B[s] as Float32Array)
        return { shape: v.aval.shape, dtype: v.aval.dtype, data: target } as HostTensor
      }
      // an output that is also an input, or appears twice, is copied so callers never share arrays
      const data = plan.inputSlots.includes(s) || plan.outputSlots.indexOf(s) !== i || given?.get(s) === B[s] ? B[s]!.slice() : B[s]!
      return { shape: v.aval.shape, dtype: v.aval.dtype, data } as HostTensor
    })
  }

  /** The arrays output slots are computed into (RunOptions' `into`): an output's first entry, where the slot is not an input. */
  private intoSlots(inputs: readonly HostTensor[], into: RunOptions['into']): Map<number, AnyTypedArray> | undefined {
    if (into === undefined) return undefined
    const { plan } = this
    checkIntoOrThrow(this.backendName, () => plan.outputSlots.map((s) => plan.slotVars[s]!.aval), inputs, into)
    const given = new Map<number, AnyTypedArray>()
    into.forEach((t, i) => {
      const s = plan.outputSlots[i]!
      if (t && !given.has(s) && !plan.inputSlots.includes(s)) given.set(s, t.data)
    })
    return given
  }

  dispose(): Promise<void> {
    this.disposed = true
    this.scratch = []
    this.shared = []
    this.forget()
    return this.plan.dispose()
  }
}
