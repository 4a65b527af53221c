/**
 * The optional PyTorch peer of the TRAIN workload: bench/peers/torch_train.py, run by the parent
 * process (not a node child) when a python3 with torch is found. It gets Tessera's initial
 * parameters and batch in a safetensors file and reports its own timings, memory and first
 * steps, which are checked here against the reference's (train-check.ts).
 */
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { deserialize } from 'node:v8'
import { encodeSafetensors, fsqConstants } from '@tessera/quantizers'
import type { ChildResult } from './child.js'
import type { TrainTrace } from './train-check.js'
import { TRACE_STEPS, compareTrainTraces } from './train-check.js'
import { trainSetup } from './train.js'

const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length
/**
 * The PyTorch rows: one thread, and one per core, both set explicitly: torch's own default is
 * OpenMP's, which was 1 on the 2-core machine of these results (omp_get_max_threads() 1 with
 * OMP_NUM_THREADS unset), so a "default" row would only repeat the one-thread row there. The
 * configuration notes give the default.
 */
export const TORCH_IMPLS: Readonly<Record<string, string>> = { 'pytorch-1t': '1', ...(cores > 1 ? { [`pytorch-${cores}t`]: String(cores) } : {}) }

/** The first of $TESSERA_BENCH_PYTHON, python3, /usr/bin/python3 that imports torch, or why none does. */
export function findTorchPython(): { python: string; version: string } | { why: string } {
  const tried: string[] = []
  const candidates = [process.env.TESSERA_BENCH_PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p)
  for (const python of [...new Set(candidates)]) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', timeout: 60_000 })
    if (r.status === 0) return { python, version: r.stdout.trim() }
    const last = (r.stderr || String(r.error ?? '')).trim().split('\n').pop() ?? ''
    tried.push(`${python}: ${last || `exit ${r.status}`}`)
  }
  return { why: `no python3 with torch found (${tried.join('; ')})` }
}

interface TorchOut {
  medianMs: number
  minMs: number
  runs: number
  loadMs: number
  setupMs: number
  firstRunMs: number
  rssBaseMB: number
  rssPeakMB: number
  config: string
  trace: { losses: number[]; indices: number[]; encoderDelta: string }
}

/** Runs the PyTorch step for `impl` (a key of TORCH_IMPLS); `refFile` is the reference's first-steps trace. */
export async function runTorch(impl: string, python: string, quick: boolean, tmp: string, refFile: string, maxSeconds: number): Promise<ChildResult> {
  const base = { workload: 'TRAIN', impl, rssBaseMB: 0, rssPeakMB: 0 } as const
  const setup = trainSetup(quick)
  const c = fsqConstants({ levels: setup.levels, bound_hard_clamp: false })
  const spec = {
    ...setup.shape, tokenDim: setup.tokenDim, traceSteps: TRACE_STEPS,
    fsq: { shift: c.shift, halfL: c.halfL, offset: c.offset, halfWidth: c.halfWidth, basis: c.basis },
  }
  const inputs = join(tmp, 'torch-train.safetensors')
  writeFileSync(inputs, encodeSafetensors({ ...setup.params, images: setup.images }, { spec: JSON.stringify(spec) }))
  const resultFile = join(tmp, `torch-${impl}.json`)
  const script = fileURLToPath(new URL('../peers/torch_train.py', import.meta.url))
  const code = await new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn(python, [script, inputs, resultFile, TORCH_IMPLS[impl]!, String(maxSeconds)], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (d) => (err += String(d)))
    const timer = setTimeout(() => p.kill('SIGKILL'), (maxSeconds * 4 + 120) * 1000)
    p.on('exit', (code) => (clearTimeout(timer), resolve({ code, err })))
  })
  if (code.code !== 0 || !existsSync(resultFile))
    return { ...base, status: 'failed', note: `${python} exited with ${code.code}: ${code.err.trim().split('\n').pop() ?? ''}` }
  const r = JSON.parse(readFileSync(resultFile, 'utf8')) as TorchOut
  const bytes = Buffer.from(r.trace.encoderDelta, 'base64')
  const trace: TrainTrace = {
    losses: r.trace.losses,
    indices: Int32Array.from(r.trace.indices),
    encoderDelta: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)),
  }
  const check = existsSync(refFile)
    ? compareTrainTraces(deserialize(readFileSync(refFile)) as TrainTrace, trace, setup.shape.lr)
    : { ok: true, ties: 0, note: 'no reference output to check against' }
  return {
    ...base,
    status: check.ok ? 'ok' : 'mismatch',
    ...(check.note ? { note: check.note } : {}),
    medianMs: r.medianMs, minMs: r.minMs, runs: r.runs, ties: 0,
    loadMs: r.loadMs, setupMs: r.setupMs, firstRunMs: r.firstRunMs, rssBaseMB: r.rssBaseMB, rssPeakMB: r.rssPeakMB,
    config: `${python}; ${r.config}`,
  }
}
