/**
 * One benchmark process: one workload on one implementation (full runs: peak RSS is that
 * implementation's alone) or on several in turn (--quick, to stay under a minute).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { deserialize, serialize } from 'node:v8'
import type { Backend, HostTensor, Program } from '@tessera/core'
import type { Arr, CheckResult, Input, Workload } from './workloads.js'
import { workloads } from './workloads.js'
import { overheadProgram } from './programs.js'
import { readInputs } from './inputs-file.js'
import type { TrainTrace } from './train-check.js'
import { compareTrainTraces } from './train-check.js'
import { trainShape } from './train-shape.js'

export interface ChildResult {
  readonly workload: string
  readonly impl: string
  readonly status: 'ok' | 'skipped' | 'failed' | 'mismatch'
  readonly note?: string
  readonly medianMs?: number
  readonly minMs?: number
  readonly runs?: number
  readonly ties?: number
  /** How the implementation was set up and the computation written (peers: threads, graph optimizations, operand forms). */
  readonly config?: string
  /**
   * Loading before any work on the workload: the implementation's module imported and its backend
   * or runtime started (Tessera: the backend package and `fastBackend()`/`cpuBackend()`; ONNX:
   * onnxruntime-node; tfjs: its backend set and ready; PyTorch: `import torch`).
   */
  readonly loadMs?: number
  /**
   * Setup after loading, before the first call, in this process with the inputs ready: the
   * program traced and compiled (ONNX: model built and session created; tfjs: constants
   * prepared; PyTorch: model and optimizer built). Issue 16's first call is this plus the first run.
   */
  readonly setupMs?: number
  /** The first call after setup (for Tessera it includes work the executable does once, for tfjs kernel setup). */
  readonly firstRunMs?: number
  /** RSS when the measurement began: the process with its modules loaded, before the inputs exist. */
  readonly rssBaseMB: number
  /**
   * The process's peak RSS (MiB) from its start (or, after an earlier implementation in the same
   * process, from this one's start) to the end of the memory calls: calls after the first, each
   * made after the previous outputs were dropped and collected, until the peak stops growing.
   * The timed calls come after them.
   */
  readonly rssPeakMB: number
  /** The whole process's peak up to the end of the timed calls, V8's not yet collected garbage included. */
  readonly rssPeakTimedMB?: number
  /** Memory calls made (after the first call). */
  readonly memoryCalls?: number
  /** Bytes of the inputs plus this implementation's outputs, in MB (2^20 bytes). */
  readonly ioMB?: number
  /** Bytes of this implementation's outputs, in MB (2^20 bytes). */
  readonly outMB?: number
  /** RSS after the inputs were built, after setup (compilation), after the first call. */
  readonly rssStagesMB?: { readonly inputs: number; readonly setup: number; readonly firstCall: number }
  /**
   * With several rounds (main.ts): each round's median and first call (setup + first run), in
   * round order; medianMs is then the median of the rounds' medians, and the first call the
   * round whose total is the median one.
   */
  readonly rounds?: readonly { readonly medianMs: number; readonly firstCallMs?: number; readonly runs: number }[]
}

/** Set by main.ts for the processes of rounds after the first: timed calls only, no memory calls (memory is the first round's). */
export const TIMING_ONLY_ENV = 'TESSERA_BENCH_TIMING_ONLY'

type Runner = {
  run(): Promise<Arr[]>
  dispose(): void
  readonly config?: string
  /** TRAIN: the first steps from the initial parameters, carried from step to step (train-check.ts). */
  firstSteps?(): Promise<TrainTrace>
}
/** `loaded()` is called once the implementation's module is imported and its backend started: what follows is setup. */
type Setup = (w: Workload, ins: Input[], quick: boolean, loaded: () => void) => Promise<Runner | string>

const requireHere = createRequire(import.meta.url)

const MB = 2 ** 20
/** This process's resident set now and its peak (VmRSS, VmHWM), in MB. */
export function rssNow(): { rss: number; peak: number } {
  // VmHWM counts this process image only; getrusage's maxRSS also counts the forked parent's pages before exec
  try {
    const status = readFileSync('/proc/self/status', 'utf8')
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1])
    const rss = kb('VmRSS'), peak = kb('VmHWM')
    if (Number.isFinite(rss) && Number.isFinite(peak)) return { rss: rss / 1024, peak: peak / 1024 }
  } catch {
    // not Linux: fall through
  }
  return { rss: process.memoryUsage().rss / MB, peak: process.resourceUsage().maxRSS / 1024 }
}

/** Reset VmHWM (Linux >= 4.0: `echo 5 > /proc/self/clear_refs`); false where that is not possible. */
function resetPeakRss(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5')
    return true
  } catch {
    return false
  }
}

/**
 * Calls after the first that count for memory, each with the previous outputs collected (they
 * also warm up): at least `min`, then until two in a row raised the peak by at most `flatMB`; at
 * most `max`, or until they took a quarter of the time budget. The C allocator keeps part of
 * each freed output, so the peak creeps up over the first few calls (W1b fast-wasm-2t: 107, 108,
 * 112, 113, 113 MiB).
 */
const MEMORY_CALLS = { min: 3, max: 10, flatMB: 0.5 } as const

/**
 * Before a memory-measuring call: let go of the previous call's outputs and collect them. The
 * await matters: a suspended async function keeps the value it last awaited (the
 * previous outputs) reachable until it awaits again, so a collection right after
 * `out = undefined` would not free them.
 */
async function releaseOutputs(): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve))
  collect()
}

/**
 * Full collections (the child runs with --expose-gc; without it this does nothing).
 * Twice: V8 frees dead ArrayBuffers' memory on a background thread after a collection, and the
 * next collection first waits for that, so after the second one the first one's garbage is gone.
 */
function collect(): void {
  const gc = (globalThis as { gc?: () => void }).gc
  gc?.()
  gc?.()
}

async function tesseraRunner(makeBackend: () => Promise<Backend | string>, program: () => Program, ins: Input[], config: string, loaded: () => void): Promise<Runner | string> {
  const backend = await makeBackend()
  if (typeof backend === 'string') return backend
  loaded()
  const exe = backend.compile(program())
  const hosts: HostTensor[] = ins.map((t) => ({ shape: t.shape, dtype: 'float32', data: t.data }))
  return {
    config,
    run: async () => (await exe.run(hosts)).map((t) => t.data),
    dispose: () => {
      exe.dispose()
      backend.dispose?.()
    },
  }
}

/** A Tessera backend; the program is traced inside setup, so the first-call figure includes the trace. */
const tessera = (make: () => Promise<Backend | string>, config: string): Setup => async (w, ins, quick, loaded) => {
  if (w.id !== 'TRAIN') return tesseraRunner(make, () => (w.id === 'OVH' ? overheadProgram() : w.tessera(quick)), ins, config, loaded)
  const backend = await make()
  if (typeof backend === 'string') return backend
  loaded()
  const { trainRunner } = await import('./train.js')
  return { ...(await trainRunner(backend, quick)), config: `${config}; the demo's buildTrainStep: forward, gradients and Adam update as one program; each timed call is a real step, writing its new parameters and Adam and quantizer state into the other of two sets of arrays allocated once (run option into, as the demo's training loop does)` }
}

const gpujs = (mode: 'cpu' | 'webasm' | 'headlessgl'): Setup =>
  tessera(async () => {
    const g = await import('@tessera/backend-gpujs')
    const why = await g.gpuJsUnavailable(mode)
    return why ?? g.gpuJsBackend(mode)
  }, `gpuJsBackend('${mode}')`)

const NO_TRAIN_PEER = 'not written for this peer: the training step is compared on tfjs and PyTorch'

/** onnxruntime-node's session options: every graph optimization, the thread counts stated rather than left to its defaults. */
export function ortOptions() {
  const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
  return { graphOptimizationLevel: 'all', executionMode: 'sequential', intraOpNumThreads: cores, interOpNumThreads: 1 } as const
}

async function onnxSetup(w: Workload, ins: Input[], quick: boolean, loaded: () => void): Promise<Runner | string> {
  if (w.id === 'TRAIN') return NO_TRAIN_PEER
  const ort = await import('onnxruntime-node')
  loaded()
  const { encodeModel } = await import('./onnx/encode.js')
  const graph = w.onnx(quick)
  const opts = ortOptions()
  const session = await ort.InferenceSession.create(encodeModel(graph), opts)
  const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {}
  graph.inputs.forEach((v, i) => (feeds[v.name] = new ort.Tensor('float32', ins[i]!.data, ins[i]!.shape)))
  return {
    config: `CPU execution provider; graphOptimizationLevel '${opts.graphOptimizationLevel}', executionMode '${opts.executionMode}', intraOpNumThreads ${opts.intraOpNumThreads}, interOpNumThreads ${opts.interOpNumThreads}; model built in code (ONNX IR 8, opset 17): ${graph.doc ?? graph.nodes.map((n) => n.op).join(', ')}`,
    run: async () => {
      const out = await session.run(feeds)
      return graph.outputs.map((v) => out[v.name]!.data as Arr)
    },
    dispose: () => void session.release(),
  }
}

async function tfjsSetup(backendName: 'cpu' | 'wasm', w: Workload, ins: Input[], quick: boolean, loaded: () => void): Promise<Runner | string> {
  const tf = await import('@tensorflow/tfjs-core')
  let wasmThreads: number | undefined
  if (backendName === 'cpu') {
    await import('@tensorflow/tfjs-backend-cpu')
    if (!(await tf.setBackend(backendName))) return `tfjs backend ${backendName} did not initialize`
    await tf.ready()
  } else {
    const wasm = await import('@tensorflow/tfjs-backend-wasm')
    // the .wasm binaries ship in the package: point tfjs at them, never at a CDN
    wasm.setWasmPaths(join(dirname(requireHere.resolve('@tensorflow/tfjs-backend-wasm')), '/'))
    if (!(await tf.setBackend(backendName))) return `tfjs backend ${backendName} did not initialize`
    await tf.ready()
    wasmThreads = wasm.getThreadsCount()
  }
  loaded()
  // the wasm backend's flags exist only once it is loaded
  const flag = async (f: string) => backendName === 'wasm' && (await tf.env().getAsync(f)) === true
  const [simd, mt] = [await flag('WASM_HAS_SIMD_SUPPORT'), await flag('WASM_HAS_MULTITHREAD_SUPPORT')]
  const engine =
    backendName === 'wasm'
      ? `tfjs-backend-wasm ${tf.version_core} (XNNPACK), ${mt && simd ? 'threaded SIMD' : simd ? 'SIMD' : 'plain'} build, ${wasmThreads} thread${wasmThreads === 1 ? '' : 's'} (WASM_HAS_SIMD_SUPPORT ${simd}, WASM_HAS_MULTITHREAD_SUPPORT ${mt})`
      : `tfjs-backend-cpu ${tf.version_core} (plain JS kernels, one thread; tfjs-node, the native TensorFlow binding, is not installed here)`
  if (w.id === 'TRAIN') {
    // reverse-mode gradients of tfjs-core's ops (bundled from its ES modules, see bundle.ts)
    await import('@tensorflow/tfjs-core/dist/register_all_gradients.js')
    const { tfjsTrainRunner } = await import('./train-tfjs.js')
    const r = tfjsTrainRunner(tf, backendName, quick)
    return { ...r, config: `${engine}; ${r.config}` }
  }
  const inputs = ins.map((t) => tf.tensor(t.data, t.shape, 'float32'))
  const plan = w.tfjs(tf, backendName, inputs, quick)
  return {
    config: `${engine}; ${plan.form}`,
    run: async () => {
      const outs = tf.tidy(() => plan.call())
      const data = await Promise.all(outs.map((t) => t.data()))
      outs.forEach((t) => t.dispose())
      return data as Arr[]
    },
    dispose: () => {
      inputs.forEach((t) => t.dispose())
      plan.kept.forEach((t) => t.dispose())
    },
  }
}

export const implementations: Readonly<Record<string, Setup>> = {
  'tessera/cpu-reference': tessera(async () => (await import('@tessera/backend-cpu')).cpuBackend(), 'cpuBackend() (reference interpreter)'),
  'tessera/fast-js': tessera(async () => (await import('@tessera/backend-fast')).fastBackend({ wasm: false }), 'fastBackend({ wasm: false }) (generated JS loops, default threads)'),
  'tessera/fast-wasm-1t': tessera(async () => (await import('@tessera/backend-fast')).fastBackend({ threads: 1, relaxedSimd: false }), 'fastBackend({ threads: 1, relaxedSimd: false })'),
  'tessera/fast-wasm-2t': tessera(async () => (await import('@tessera/backend-fast')).fastBackend({ threads: 2, relaxedSimd: false }), 'fastBackend({ threads: 2, relaxedSimd: false })'),
  // every distance in float32 (no int16 screening): the kernel the SIMD ceiling bounds; nearest-code workloads only
  'tessera/fast-wasm-f32-2t': tessera(
    async () => (await import('@tessera/backend-fast')).fastBackend({ threads: 2, relaxedSimd: false, nearestScreen: false }),
    'fastBackend({ threads: 2, relaxedSimd: false, nearestScreen: false }) (every distance in float32)',
  ),
  // fused multiply-adds (relaxed SIMD) in the nearest-code kernel: Node 20 needs NODE_FLAGS below
  'tessera/fast-wasm-relaxed-2t': tessera(async () => {
    const { fastBackend } = await import('@tessera/backend-fast')
    try {
      return fastBackend({ threads: 2, relaxedSimd: true })
    } catch (e) {
      return (e as Error).message
    }
  }, 'fastBackend({ threads: 2, relaxedSimd: true })'),
  'tessera/gpujs-cpu': gpujs('cpu'),
  'tessera/gpujs-webasm': gpujs('webasm'),
  'tessera/gpujs-headlessgl': gpujs('headlessgl'),
  'onnxruntime-node': onnxSetup,
  'tfjs-cpu': (w, ins, q, loaded) => tfjsSetup('cpu', w, ins, q, loaded),
  'tfjs-wasm': (w, ins, q, loaded) => tfjsSetup('wasm', w, ins, q, loaded),
  'plain-js': async (w, ins, q) => (w.id === 'TRAIN' ? NO_TRAIN_PEER : { run: async () => w.plain(ins, q), dispose() {}, ...(w.plainForm ? { config: w.plainForm } : {}) }),
}

export const REFERENCE = 'tessera/cpu-reference'

/** Node options an implementation's process needs: relaxed SIMD is on by default from Node 22 (and Chrome 114). */
export const NODE_FLAGS: Readonly<Record<string, readonly string[]>> = {
  'tessera/fast-wasm-relaxed-2t': Number(process.versions.node.split('.')[0]) < 22 ? ['--experimental-wasm-relaxed-simd'] : [],
}

/**
 * argv: <workload> <impl[,impl...]> <quick 0|1> <result file> <reference cache file> <max seconds>
 * [<inputs file>] (written by `writeInputs`; without it the process generates the inputs itself).
 * Several implementations in one process (the --quick mode): each one's peak is measured from its
 * own start, but the process still holds what the earlier ones loaded and left to the allocator.
 */
async function main(): Promise<void> {
  const [wid, implList, quickArg, resultFile, refFile, maxSecArg, inputsFile] = process.argv.slice(2) as string[]
  const quick = quickArg === '1'
  const maxMs = Number(maxSecArg) * 1000
  const results: ChildResult[] = []
  const save = () => writeFileSync(resultFile!, JSON.stringify(results))
  for (const impl of implList!.split(',')) {
    results.push(await measure(wid!, impl, quick, refFile!, maxMs, inputsFile, results.length === 0))
    save()
  }
  process.exit(0)
}

async function measure(wid: string, impl: string, quick: boolean, refFile: string, maxMs: number, inputsFile?: string, first = true): Promise<ChildResult> {
  collect()
  // --quick: an earlier implementation's peak is not this one's
  if (!first) resetPeakRss()
  const rssBaseMB = rssNow().rss
  // frozen before the check against the reference, which is not counted
  let rssPeakMB: number | undefined
  let rssPeakTimedMB: number | undefined
  let memoryCalls: number | undefined
  let ioMB: number | undefined
  let outMB: number | undefined
  let rssStagesMB: ChildResult['rssStagesMB']
  let config: string | undefined
  let loadMs: number | undefined
  let setupMs: number | undefined
  let firstRunMs: number | undefined
  const done = (r: Omit<ChildResult, 'workload' | 'impl' | 'rssBaseMB' | 'rssPeakMB'>): ChildResult => ({
    workload: wid, impl, ...r, rssBaseMB, rssPeakMB: rssPeakMB ?? rssNow().peak,
    ...(config !== undefined ? { config } : {}), ...(loadMs !== undefined ? { loadMs } : {}), ...(setupMs !== undefined ? { setupMs } : {}), ...(firstRunMs !== undefined ? { firstRunMs } : {}),
    ...(rssPeakTimedMB !== undefined ? { rssPeakTimedMB } : {}), ...(memoryCalls !== undefined ? { memoryCalls } : {}),
    ...(ioMB !== undefined ? { ioMB } : {}), ...(outMB !== undefined ? { outMB } : {}), ...(rssStagesMB ? { rssStagesMB } : {}),
  })
  const bytes = (arrs: readonly { byteLength: number }[]) => arrs.reduce((s, a) => s + a.byteLength, 0)
  try {
    const w = wid === 'OVH' ? overheadWorkload : wid === 'TRAIN' ? trainWorkload : workloads.find((x) => x.id === wid)
    if (!w) throw new Error(`unknown workload ${wid}`)
    const setup = implementations[impl]
    if (!setup) throw new Error(`unknown implementation ${impl}`)
    const ins = inputsFile ? readInputs(inputsFile) : w.inputs(quick)
    const afterInputs = rssNow().rss
    const ts = performance.now()
    let tl = ts
    const runner = await setup(w, ins, quick, () => (tl = performance.now()))
    if (typeof runner === 'string') return done({ status: 'skipped', note: runner })
    setupMs = performance.now() - tl
    // an implementation with nothing to load (plain JS) reports no load time
    if (tl > ts) loadMs = tl - ts
    if (runner.config) config = runner.config
    const afterSetup = rssNow().rss
    // warm-up: at least one call, more while they are cheap
    const t0 = performance.now()
    let out: Arr[] | undefined = await runner.run()
    const firstMs = performance.now() - t0
    firstRunMs = firstMs
    const afterFirst = rssNow()
    rssStagesMB = { inputs: afterInputs, setup: afterSetup, firstCall: afterFirst.rss }
    rssPeakMB = afterFirst.peak
    // TRAIN's inputs live inside its runner (the model's parameters and a batch): no I/O figure
    if (w.id !== 'TRAIN') {
      outMB = bytes(out) / MB
      ioMB = bytes(ins.map((t) => t.data)) / MB + outMB
    }
    // far too slow to time five more calls in the budget: report the one call, flagged
    if (firstMs > maxMs / 4) {
      const check = await checkAgainstReference(w, impl, runner, ins, out, refFile, quick)
      runner.dispose()
      return done({
        status: check.ok ? 'ok' : 'mismatch', medianMs: firstMs, minMs: firstMs, runs: 1, ties: check.ties,
        note: `${check.note ? check.note + '; ' : ''}one call (with compilation) took ${(firstMs / 1000).toFixed(1)} s, over ${(maxMs / 4000).toFixed(0)} s: not timed further`,
      })
    }
    // Memory: V8 frees large typed arrays lazily, so back-to-back calls also hold one or two
    // earlier calls' outputs that the caller has dropped. The peak is read over calls made
    // with those collected, before the timed calls (whose garbage would stay with the allocator
    // and shift the figure by the history of collections); the timed calls then run with no
    // forced collections, as before, and their peak is reported separately.
    const memStart = performance.now()
    const memoryMax = process.env[TIMING_ONLY_ENV] ? 0 : MEMORY_CALLS.max
    let flat = 0
    for (memoryCalls = 0; memoryCalls < memoryMax; ) {
      out = undefined
      await releaseOutputs()
      out = await runner.run()
      memoryCalls++
      const peak = rssNow().peak
      flat = peak - rssPeakMB <= MEMORY_CALLS.flatMB ? flat + 1 : 0
      rssPeakMB = peak
      if ((memoryCalls >= MEMORY_CALLS.min && flat >= 2) || performance.now() - memStart > maxMs / 4) break
    }
    // warm-up before the timed calls: at least WARM_UP.calls and WARM_UP.ms (V8 optimizes JS and
    // WebAssembly functions only after they have run a while), within the first second
    const w0 = performance.now()
    for (let i = 0; (i < WARM_UP.calls || performance.now() - w0 < WARM_UP.ms) && performance.now() - t0 < Math.min(1000, maxMs / 10); i++) out = await runner.run()
    const times: number[] = []
    const start = performance.now()
    const minRuns = w.id === 'OVH' ? 2000 : 5
    const maxRuns = w.id === 'OVH' ? 20000 : 30
    while (times.length < maxRuns) {
      const s = performance.now()
      out = await runner.run()
      times.push(performance.now() - s)
      const spent = performance.now() - start
      if (times.length >= minRuns && spent > Math.min(2000, maxMs)) break
    }
    rssPeakTimedMB = rssNow().peak
    times.sort((a, b) => a - b)
    const medianMs = times[Math.floor(times.length / 2)]!
    const check = await checkAgainstReference(w, impl, runner, ins, out!, refFile, quick)
    runner.dispose()
    return done({
      status: check.ok ? 'ok' : 'mismatch',
      ...(check.note ? { note: check.note } : {}),
      medianMs, minMs: times[0]!, runs: times.length, ties: check.ties,
    })
  } catch (e) {
    return done({ status: 'failed', note: e instanceof Error ? e.message.split('\n')[0] : String(e) })
  }
}

/**
 * The last call's outputs against the reference's (which the reference writes to `refFile`);
 * TRAIN compares the first steps from the initial parameters instead (train-check.ts).
 */
async function checkAgainstReference(w: Workload, impl: string, runner: Runner, ins: Input[], out: Arr[], refFile: string, quick: boolean): Promise<CheckResult> {
  if (w.id === 'TRAIN') {
    if (!runner.firstSteps) return { ok: false, ties: 0, note: 'no first-steps trace to check' }
    const trace = await runner.firstSteps()
    if (impl === REFERENCE) {
      writeFileSync(refFile, serialize(trace))
      return { ok: true, ties: 0, note: `losses of steps 1-${trace.losses.length}: ${trace.losses.map((l) => l.toPrecision(6)).join(', ')}` }
    }
    if (!existsSync(refFile)) return { ok: true, ties: 0, note: 'no reference output to check against' }
    return compareTrainTraces(deserialize(readFileSync(refFile)) as TrainTrace, trace, trainShape(quick).lr)
  }
  if (impl === REFERENCE) {
    writeFileSync(refFile, serialize(out))
    return { ok: true, ties: 0 }
  }
  if (!existsSync(refFile)) return { ok: true, ties: 0, note: 'no reference output to check against' }
  return w.check(ins, deserialize(readFileSync(refFile)) as Arr[], out, quick)
}

/**
 * Warm-up calls after the memory calls, before the timed ones (every implementation alike): with 4
 * calls alone, a few-millisecond workload's timed calls still included V8's tier-up (bench/README.md,
 * "Outputs written into the caller's arrays", the warm-up).
 */
export const WARM_UP = { calls: 4, ms: 300 } as const

/** Per-call overhead: a warm compiled 4-element add, timed over thousands of calls. */
const overheadWorkload: Workload = {
  id: 'OVH',
  title: () => 'per-call overhead: x + 1 on 4 floats',
  vectors: () => 1,
  inputs: () => [{ shape: [4], data: Float32Array.of(1, 2, 3, 4) }],
  tessera: () => overheadProgram(),
  onnx: () => ({
    name: 'ovh',
    nodes: [{ op: 'Add', inputs: ['x', 'one'], outputs: ['y'] }],
    initializers: [{ name: 'one', dims: [], type: 1, data: Float32Array.of(1) }],
    inputs: [{ name: 'x', type: 1, dims: [4] }],
    outputs: [{ name: 'y', type: 1, dims: [4] }],
    doc: 'Add',
  }),
  tfjs: (tf, _b, [x]) => ({ kept: [], call: () => [tf.add(x!, 1)], form: 'tf.add(x, 1)' }),
  plain: ([x]) => [Float32Array.from(x!.data, (v) => v + 1)],
  check: (_i, ref, got) => ({ ok: Array.from(ref[0]! as Float32Array).every((v, i) => v === Number(got[0]![i])), ties: 0 }),
}


const unsupported = () => {
  throw new Error('the training step is built by its runner (train.ts, train-tfjs.ts), not from a workload form')
}
/** The demo's training step; each implementation's runner builds it, and the check compares first steps (train-check.ts). */
const trainWorkload: Workload = {
  id: 'TRAIN',
  title: (q) => `training step of the demo's VQ-VAE (FSQ, Adam), batch ${trainShape(q).batch}`,
  vectors: (q) => trainShape(q).batch,
  inputs: () => [],
  tessera: unsupported,
  onnx: unsupported,
  tfjs: unsupported,
  plain: unsupported,
  check: () => ({ ok: false, ties: 0, note: 'TRAIN is checked by its first steps' }),
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) void main()
