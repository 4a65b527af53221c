import type { AnyTypedArray, Backend, Caps, DType, Executable, HostTensor, Kernel, Plan, Program } from '@tessera/core'
import { TesseraError, allocate, applyPrim, checkAvals, checkIntoOrThrow, disposedError, lowerProgram, random, writeInto } from '@tessera/core'
import * as gpujs from 'gpu.js'
import { kernelSource } from './codegen.js'

export type GpuJsMode = 'cpu' | 'webasm' | 'headlessgl' | 'webgl2' | 'webgpu'

export const gpuJsModes: readonly GpuJsMode[] = ['cpu', 'webasm', 'headlessgl', 'webgl2', 'webgpu']

// gpu.js is CommonJS; in the browser bundle the classes hang off GPU itself.
const lib = gpujs as unknown as Record<string, unknown> & { GPU: Record<string, unknown> }
const gpuClass = (name: string): unknown => lib[name] ?? lib.GPU[name]
const GPUCtor = lib.GPU as unknown as new (settings: object) => GpuInstance

/** The kernel class that must run each mode (gpu.js falls back silently; we check). */
const kernelClassOf: Readonly<Record<GpuJsMode, string>> = {
  cpu: 'CPUKernel',
  webasm: 'WebAssemblyKernel',
  headlessgl: 'HeadlessGLKernel',
  webgl2: 'WebGL2Kernel',
  webgpu: 'WebGPUKernel',
}

interface GpuInstance {
  createKernel(source: string, settings: object): KernelFn
  destroy(): Promise<void>
  context?: unknown
}
interface KernelFn {
  (...args: unknown[]): unknown
  kernel: { constructor: unknown; fallbackReason?: string | null }
}
interface DeviceValue {
  toArray(): Float32Array | Promise<Float32Array>
  delete(): void
}
const isDeviceValue = (v: unknown): v is DeviceValue =>
  typeof v === 'object' && v !== null && typeof (v as DeviceValue).delete === 'function' && typeof (v as DeviceValue).toArray === 'function'

/**
 * Agreement with the reference per float op, measured: scripts/measure-error.ts runs every
 * primitive's conformance inputs (300 and 800 cases per primitive, two seeds; 2500 for the worst
 * ones) and takes, per mode, the worst error of results below 1 in magnitude (atol) and the worst
 * relative error of results of 1 or more (rtol: add, sub, mul, sums, matmul; transcendentalRtol:
 * exp, log, sqrt, tanh, atanh, recip, div, pow, added to rtol). Each cap is twice the worst
 * measured, and rtol is at least one float32 rounding (2^-24: the cpu mode keeps a fused kernel's
 * intermediates in float64, the reference rounds each). The table is in docs/BACKENDS.md.
 * Integers and bools are exact below 2^24. webgl2 and webgpu were measured in headless Chromium
 * (test/measure-error.browser.test.ts, 300 cases per primitive, SwiftShader): every figure is at
 * or below headlessgl's, so they share its caps. All figures come from software renderers (Mesa
 * llvmpipe, SwiftShader); on a hardware GPU, rerun the measurement.
 */
const measuredTolerance: Readonly<Record<GpuJsMode, Pick<Caps, 'atol' | 'rtol' | 'transcendentalRtol'>>> = {
  // worst: tanh/atanh 3.0e-8 below 1; every other primitive exact
  cpu: { atol: 6e-8, rtol: 2 ** -24, transcendentalRtol: 0 },
  // worst: tanh/atanh/matmul 6.0e-8 below 1; matmul and sums 1.2e-7 relative (float32 Kahan vs float64); atanh 1.0e-7
  webasm: { atol: 1.2e-7, rtol: 2.4e-7, transcendentalRtol: 0 },
  // worst: pow 2.4e-7 below 1; matmul 1.2e-7 relative; pow 1.2e-6 and exp 9.0e-7 relative (Mesa's exp2/log2)
  headlessgl: { atol: 4.8e-7, rtol: 2.4e-7, transcendentalRtol: 2.2e-6 },
  // worst (both): exp/pow 1.8e-7 below 1; matmul 9.2e-8 relative; exp 8.6e-7, pow 8.1e-7 relative
  webgl2: { atol: 4.8e-7, rtol: 2.4e-7, transcendentalRtol: 2.2e-6 },
  webgpu: { atol: 4.8e-7, rtol: 2.4e-7, transcendentalRtol: 2.2e-6 },
}

export function gpuJsCaps(mode: GpuJsMode): Caps {
  const gl = mode === 'headlessgl' || mode === 'webgl2'
  return {
    exactIntLimit: 2 ** 24,
    strictNaN: false,
    // GL: one texture unit per argument (16 units is the common floor); WebGPU: 8 storage buffers per stage
    maxKernelArgs: mode === 'webgpu' ? 6 : 12,
    maxTextureSize: gl || mode === 'webgpu' ? 4096 : Infinity,
    // llvmpipe stops longer shader loops without an error; GPU drivers are held to the same bound
    ...(gl || mode === 'webgpu' ? { maxLoop: 65535 } : {}),
    ...measuredTolerance[mode],
    fuses: true,
  }
}

/** Why a mode cannot run here, or undefined when it can. Never throws. */
export async function gpuJsUnavailable(mode: GpuJsMode): Promise<string | undefined> {
  const G = lib.GPU as unknown as Record<string, unknown> & { isWebGPUAvailable(): Promise<boolean> }
  switch (mode) {
    case 'cpu':
      return undefined
    case 'webasm':
      return G.isWebAssemblySupported ? undefined : 'WebAssembly is not available'
    case 'headlessgl':
      return G.isHeadlessGLSupported
        ? undefined
        : 'headless-gl is not usable (is the gl module built, and is there an X display, e.g. xvfb-run -a?)'
    case 'webgl2':
      return G.isWebGL2Supported ? undefined : 'WebGL2 is not available (needs a browser with WebGL2)'
    case 'webgpu':
      if (!G.isWebGPUSupported) return 'navigator.gpu is missing (needs a browser with WebGPU)'
      return (await G.isWebGPUAvailable()) ? undefined : 'WebGPU has no adapter (Chromium needs --enable-unsafe-webgpu)'
  }
}

export interface GpuJsStats {
  /** device values (textures, buffers) produced by kernels and not yet deleted */
  readonly liveDeviceValues: number
  readonly cachedKernels: number
  readonly kernelCalls: number
}

export interface GpuJsBackend extends Backend {
  readonly mode: GpuJsMode
  plan(program: Program): Plan
  stats(): GpuJsStats
  /** the gpu.js GPU instance (for diagnostics: e.g. counting GL textures) */
  readonly gpu: unknown
  dispose(): Promise<void>
}

/** A gpu.js backend for one mode. Throws a TesseraError('backend') when the mode is unavailable. */
export function gpuJsBackend(mode: GpuJsMode): GpuJsBackend {
  if (!(mode in kernelClassOf)) throw new TesseraError('backend', 'gpuJsBackend', `unknown mode ${String(mode)}; use one of ${gpuJsModes.join(', ')}`)
  let gpu: GpuInstance
  try {
    gpu = new GPUCtor({ mode })
  } catch (e) {
    throw new TesseraError('backend', 'gpuJsBackend', `gpu.js mode ${mode} is not available: ${e instanceof Error ? e.message : String(e)}`)
  }
  const caps = gpuJsCaps(mode)
  const expected = gpuClass(kernelClassOf[mode])
  const cache = new Map<string, KernelFn>()
  let live = 0
  let calls = 0
  let disposed = false

  /** gpu.js reports its failures (shader compilation, GL limits) as bare Errors: name the backend. */
  const asBackendError = (what: string, e: unknown): TesseraError =>
    e instanceof TesseraError ? e : new TesseraError('backend', `gpujs(${mode})`, `${what}: ${e instanceof Error ? e.message : String(e)}`)

  const kernelFor = (k: Kernel, argSizes: readonly number[], onDevice: readonly boolean[], cache: Map<string, KernelFn>): KernelFn => {
    const { source, loopSize } = kernelSource(k)
    // gpu.js bakes argument sizes and kinds (a device result or a host array) into a built kernel,
    // so both are part of the key: a WebGPU kernel first called with a device result takes a
    // host array passed later for a buffer of another device, and fails
    const key = `${k.size}|${argSizes.join(',')}|${onDevice.map((d) => (d ? 'd' : 'h')).join('')}|${source}`
    let fn = cache.get(key)
    if (!fn) {
      try {
        fn = gpu.createKernel(source, {
          output: [k.size],
          precision: 'single',
          tactic: 'precision',
          pipeline: true,
          immutable: true,
          loopMaxIterations: Math.max(loopSize, 1),
          dynamicOutput: false,
          dynamicArguments: false,
        })
      } catch (e) {
        throw asBackendError(`creating the kernel for b${k.out}`, e)
      }
      cache.set(key, fn)
    }
    return fn
  }

  const checkMode = (fn: KernelFn) => {
    const ran = fn.kernel.constructor
    if (expected === undefined || ran !== expected) {
      const name = (ran as { name?: string }).name ?? 'unknown'
      throw new TesseraError(
        'backend',
        `gpujs(${mode})`,
        `asked for mode ${mode} but gpu.js ran ${name}${fn.kernel.fallbackReason ? ` (${fn.kernel.fallbackReason})` : ''}`,
      )
    }
  }

  const toDevice = (t: { dtype: DType; data: AnyTypedArray }, what: string): Float32Array => {
    if (t.dtype !== 'float32') {
      for (let j = 0; j < t.data.length; j++)
        if (Math.abs(t.data[j]!) >= caps.exactIntLimit)
          throw new TesseraError('input', `gpujs(${mode})`, `${what} element ${j} = ${t.data[j]} is too large: integers must stay below 2^24 on gpu.js`)
      return Float32Array.from(t.data)
    }
    return t.data as Float32Array
  }

  const fromDevice = (a: ArrayLike<number>, dtype: DType, size: number): AnyTypedArray => {
    if (dtype === 'float32') return Float32Array.from({ length: size }, (_, j) => a[j]!)
    const out = allocate(dtype, size)
    for (let j = 0; j < size; j++) out[j] = dtype === 'bool' ? (a[j]! > 0.5 ? 1 : 0) : Math.round(a[j]!)
    return out
  }

  const readBack = async (v: unknown, size: number): Promise<ArrayLike<number>> => {
    if (isDeviceValue(v)) {
      try {
        return await v.toArray()
      } catch (e) {
        throw asBackendError(`reading back ${size} elements`, e)
      }
    }
    if (v instanceof Float32Array) return v
    if (v && typeof v === 'object' && 'length' in v) return v as ArrayLike<number>
    throw new TesseraError('backend', `gpujs(${mode})`, `cannot read back a value of ${size} elements`)
  }

  const backend: GpuJsBackend = {
    name: `gpujs-${mode}`,
    mode,
    caps,
    gpu,
    plan: (program) => lowerProgram(program, caps),
    stats: () => ({ liveDeviceValues: live, cachedKernels: cache.size, kernelCalls: calls }),
    dispose() {
      if (disposed) return Promise.resolve()
      disposed = true
      cache.clear()
      // gpu.js tears its context down on a later turn: the promise resolves once it has
      return Promise.resolve(gpu.destroy()).then(
        () => undefined,
        (e: unknown) => Promise.reject(asBackendError('disposing', e)),
      )
    },
    compile(program: Program): Executable {
      if (disposed) throw disposedError(`gpujs(${mode})`)
      const plan = lowerProgram(program, caps)
      const kernels = new Map<Kernel, KernelFn>()
      // gpu.js's WebGPU kernels fail ('from a different WebGPU device') when a kernel built for
      // one compiled program is called with buffers of another: there, kernels are shared within
      // one program only
      const shared = mode === 'webgpu' ? new Map<string, KernelFn>() : cache
      const readByKernels = new Set<number>()
      // what kernels compute stays on the device; every other buffer a kernel reads is a host array
      const onDevice = new Set<number>()
      for (const s of plan.steps) if (s.k === 'kernel' && s.kernel.size > 0) onDevice.add(s.kernel.out)
      for (const s of plan.steps)
        if (s.k === 'kernel' && s.kernel.size > 0) {
          const args = s.kernel.args
          kernels.set(s.kernel, kernelFor(s.kernel, args.map((b) => Math.max(plan.buffers[b]!.size, 1)), args.map((b) => onDevice.has(b)), shared))
          for (const b of s.kernel.args) readByKernels.add(b)
        }
      // constants only host steps read (key-folding tags) keep their full int32 range
      const consts = new Map<number, Float32Array>()
      for (const b of plan.buffers)
        if (b.kind === 'const' && readByKernels.has(b.id)) consts.set(b.id, toDevice({ dtype: b.dtype, data: b.data! }, `constant b${b.id}`))
      const checked = new Set<KernelFn>()

      const runOnce = async (inputs: readonly HostTensor[]): Promise<HostTensor[]> => {
        // the kernels of a disposed backend belong to a destroyed context
        if (disposed) throw disposedError(`gpujs(${mode})`)
        const ok = checkAvals(`gpujs(${mode})`, program.inputs.map((v) => v.aval), inputs)
        if (ok._tag === 'Left') throw ok.left
        for (const g of plan.gatherIndexInputs) {
          const data = inputs[plan.inputs.indexOf(g.buf)]!.data
          for (let j = 0; j < data.length; j++)
            if (data[j]! < 0 || data[j]! >= g.bound)
              throw new TesseraError('runtime', 'gather', `index ${data[j]} (at flat position ${j}) is out of range [0, ${g.bound}) on axis ${g.axis}`)
        }
        const env = new Map<number, unknown>()
        const owned = new Set<number>()
        const release = (b: number) => {
          const v = env.get(b)
          if (owned.has(b) && isDeviceValue(v)) {
            v.delete()
            live--
          }
          owned.delete(b)
          env.delete(b)
        }
        try {
          // values the host holds: inputs, constants, and what host steps compute
          const hostInputs = new Map<number, AnyTypedArray>()
          for (const b of plan.buffers) if (b.kind === 'const') hostInputs.set(b.id, b.data!)
          plan.inputs.forEach((b, i) => {
            const t = inputs[i]!
            hostInputs.set(b, t.data)
            // inputs only the host reads (random keys) keep their full int32 range
            if (readByKernels.has(b)) env.set(b, t.data.length === 0 ? new Float32Array(1) : toDevice(t, `input ${i}`))
          })
          for (const [b, d] of consts) env.set(b, d.length === 0 ? new Float32Array(1) : d)
          for (const s of plan.steps) {
            if (s.k === 'free') release(s.buf)
            else if (s.k === 'random') {
              const key = hostInputs.get(s.key) ?? (await readBack(env.get(s.key), 2))
              env.set(s.out, random.fillUniform(key[0]! | 0, key[1]! | 0, new Float32Array(plan.buffers[s.out]!.size)))
            } else if (s.k === 'host') {
              const ins = await Promise.all(
                s.ins.map(async (b) => {
                  const pb = plan.buffers[b]!
                  const data = hostInputs.get(b) ?? fromDevice(await readBack(env.get(b), pb.size), pb.dtype, pb.size)
                  return { shape: pb.shape, dtype: pb.dtype, data } as HostTensor
                }),
              )
              const out = applyPrim(s.eqn.prim, ins, s.eqn.params as never, s.eqn.out.aval)
              hostInputs.set(s.out, out.data)
              if (readByKernels.has(s.out)) env.set(s.out, toDevice(out, `b${s.out} (computed on the host)`))
            } else if (s.k === 'kernel') {
              const k = s.kernel
              if (k.size === 0) {
                env.set(k.out, new Float32Array(0))
                continue
              }
              const fn = kernels.get(k)!
              let r: unknown
              try {
                // gpu.js compiles a kernel on its first call, so compile errors surface here too
                r = fn(...k.args.map((b) => env.get(b)))
                if (r instanceof Promise) r = await r
              } catch (e) {
                throw asBackendError(`running the kernel for b${k.out}`, e)
              }
              calls++
              if (!checked.has(fn)) {
                checkMode(fn)
                checked.add(fn)
              }
              env.set(k.out, r)
              if (isDeviceValue(r)) {
                owned.add(k.out)
                live++
              }
            }
          }
          const outs: HostTensor[] = []
          for (const b of plan.outputs) {
            const pb = plan.buffers[b]!
            if (pb.kind === 'input') {
              const t = inputs[plan.inputs.indexOf(b)]!
              outs.push({ shape: [...t.shape], dtype: t.dtype, data: t.data.slice() } as HostTensor)
              continue
            }
            if (pb.parts) {
              // an output too large for one texture, written in parts: joined here
              const whole = allocate(pb.dtype, pb.size)
              let at = 0
              for (const p of pb.parts) {
                const part = plan.buffers[p]!
                whole.set(fromDevice(await readBack(env.get(p), part.size), pb.dtype, part.size) as never, at)
                at += part.size
              }
              outs.push({ shape: [...pb.shape], dtype: pb.dtype, data: whole } as HostTensor)
              continue
            }
            const src = pb.kind === 'const' ? pb.data! : await readBack(env.get(b), pb.size)
            outs.push({ shape: [...pb.shape], dtype: pb.dtype, data: fromDevice(src, pb.dtype, pb.size) } as HostTensor)
          }
          return outs
        } finally {
          for (const b of [...owned]) release(b)
        }
      }
      return {
        run: async (inputs, options) => {
          checkIntoOrThrow(`gpujs(${mode})`, () => program.outputs.map((v) => v.aval), inputs, options?.into)
          return writeInto(await runOnce(inputs), options?.into)
        },
        dispose() {},
      }
    },
  }
  return backend
}
