/**
 * `pnpm bench [--quick] [--only W1,W2] [--impl fast,onnx]`: every workload on every available
 * implementation, one process each, then a table printed and written to bench/results/.
 */
import { fork, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command } from 'commander'
import type { ChildResult } from './child.js'
import { NODE_FLAGS, REFERENCE, TIMING_ONLY_ENV, WARM_UP, implementations } from './child.js'
import { workloads } from './workloads.js'
import type { CeilingRow } from './simd-ceiling.js'
import type { FirstTouch } from './first-touch.js'
import { bundleChild } from './bundle.js'
import { writeInputs } from './inputs-file.js'
import { TORCH_IMPLS, findTorchPython, runTorch } from './train-torch.js'
import { ROUND_MAX_MS, mergeRounds, rerun } from './rounds.js'

const here = dirname(fileURLToPath(import.meta.url))
const benchDir = join(here, '..')

const program = new Command()
  .option('--quick', 'smaller sizes (under a minute)')
  .option('--only <ids>', 'comma-separated workload ids (W1,W1b,W2,W3a,W3b,RVQ,TRAIN,OVH)')
  .option('--impl <names>', 'comma-separated substrings of implementation names to run (the reference always runs)')
  .option('--max-seconds <s>', 'time budget per implementation and workload', '60')
  .option('--rounds <n>', 'processes per implementation whose calls take under a second, in alternating order (see ROUNDS); --quick: 1', '3')
  .option('--out <dir>', 'results directory', join(benchDir, 'results'))
  .option('--no-write', 'print only')
  .parse()
const opts = program.opts<{ quick?: boolean; only?: string; impl?: string; maxSeconds: string; rounds: string; out: string; write: boolean }>()
const quick = !!opts.quick
// --quick: smaller sizes, a shorter budget per implementation, and one process per workload
const maxSeconds = quick ? Math.min(0.3, Number(opts.maxSeconds)) : Number(opts.maxSeconds)
const rounds = quick ? 1 : Math.max(1, Math.floor(Number(opts.rounds)) || 1)

const PEERS = ['onnxruntime-node', 'tfjs-cpu', 'tfjs-wasm', 'plain-js', ...Object.keys(TORCH_IMPLS)]
const allIds = [...workloads.map((w) => w.id), 'TRAIN', 'OVH']
const ids = opts.only ? opts.only.split(',') : allIds
const implFilter = opts.impl?.split(',')
const impls = Object.keys(implementations).filter((n) => n === REFERENCE || !implFilter || implFilter.some((f) => n.includes(f)))
// PyTorch runs the TRAIN workload only, from the parent (train-torch.ts)
const torchImpls = Object.keys(TORCH_IMPLS).filter((n) => !implFilter || implFilter.some((f) => n.includes(f)))

const tmp = join(os.tmpdir(), `tessera-bench-${process.pid}`)
mkdirSync(tmp, { recursive: true })
// under bench/node_modules so the bundle's external packages resolve from bench's dependencies
const bundleDir = join(benchDir, 'node_modules', '.cache', 'tessera-bench', String(process.pid))

/** The workload's inputs, generated here once and read by every measured process (see inputs-file.ts). */
function inputsFile(wid: string): string | undefined {
  const w = workloads.find((x) => x.id === wid)
  if (!w) return undefined
  const file = join(tmp, `inputs-${wid}.bin`)
  if (!existsSync(file)) writeInputs(file, w.inputs(quick))
  return file
}

/** Where the reference's process leaves its outputs (TRAIN: its first steps) for the others' checks. */
const refFileOf = (wid: string) => join(tmp, `ref-${wid}.bin`)

function runChild(childEntry: string, wid: string, implList: readonly string[], timingOnly = false): Promise<ChildResult[]> {
  const resultFile = join(tmp, 'result.json')
  rmSync(resultFile, { force: true })
  const ins = inputsFile(wid)
  return new Promise((resolve) => {
    const args = [wid, implList.join(','), quick ? '1' : '0', resultFile, refFileOf(wid), String(maxSeconds), ...(ins ? [ins] : [])]
    // plain node on the bundle: no tsx loader in the measured process; gc() between calls
    const child = fork(childEntry, args, {
      execPath: process.execPath,
      execArgv: ['--expose-gc', ...implList.flatMap((i) => NODE_FLAGS[i] ?? [])],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      ...(timingOnly ? { env: { ...process.env, [TIMING_ONLY_ENV]: '1' } } : {}),
    })
    let err = ''
    child.stderr!.on('data', (d) => (err += String(d)))
    const timer = setTimeout(() => child.kill('SIGKILL'), (maxSeconds * 4 + 120) * 1000 * implList.length)
    child.on('exit', (code) => {
      clearTimeout(timer)
      const got = existsSync(resultFile) ? (JSON.parse(readFileSync(resultFile, 'utf8')) as ChildResult[]) : []
      // implementations the process did not get to (it crashed or was killed) are reported as failed
      for (const impl of implList.slice(got.length))
        got.push({
          workload: wid, impl, status: 'failed', rssBaseMB: 0, rssPeakMB: 0,
          note: `process exited with ${code}${err ? `: ${err.trim().split('\n').slice(-1)[0]}` : ''}`,
        })
      resolve(got)
    })
  })
}

function machine() {
  const cpus = os.cpus()
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    loadavg: os.loadavg().map((x) => +x.toFixed(2)),
  }
}

const fmt = (x: number | undefined, d = 1) => (x === undefined || !Number.isFinite(x) ? '–' : x >= 100 ? x.toFixed(0) : x.toFixed(d))

/** gpu.js headlessgl needs an X display: without one, re-run this command under xvfb-run when it exists. */
function reexecUnderXvfb(): boolean {
  if (process.env.DISPLAY || process.env.TESSERA_BENCH_XVFB || process.platform !== 'linux') return false
  if (spawnSync('sh', ['-c', 'command -v xvfb-run'], { stdio: 'ignore' }).status !== 0) return false
  const r = spawnSync('xvfb-run', ['-a', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, TESSERA_BENCH_XVFB: '1' },
  })
  process.exit(r.status ?? 1)
}

/**
 * A microbenchmark's JSON line from `file --json` run in a child process of its own (fresh memory;
 * relaxed SIMD enabled on Node 20 by the ceiling's own re-run), or why it failed.
 */
function jsonChild<T>(file: string, what: string): T | string {
  const r = spawnSync(process.execPath, [...process.execArgv, join(here, file), '--json'], { encoding: 'utf8' })
  const line = r.stdout?.trim().split('\n').pop()
  if (r.status !== 0 || !line) return `the ${what} microbenchmark failed: ${(r.stderr ?? '').trim().split('\n').pop() ?? r.status}`
  return JSON.parse(line) as T
}

/** The SIMD ceiling (simd-ceiling.ts), measured before the workloads while nothing else of the run is going on. */
const measureCeiling = () => jsonChild<CeilingRow[]>('simd-ceiling.ts', 'ceiling')
/** The cost of writing into fresh memory (first-touch.ts). */
const measureFirstTouch = () => jsonChild<FirstTouch>('first-touch.ts', 'first-touch')

async function main(): Promise<void> {
  if (reexecUnderXvfb()) return
  const started = new Date()
  const results: ChildResult[] = []
  const ceiling = ids.some((w) => FLOP_ROWS.includes(w)) ? measureCeiling() : undefined
  const touch = quick ? undefined : measureFirstTouch()
  if (touch) process.stderr.write(`first touch: ${typeof touch === 'string' ? touch : `${fmt(touch.freshMsPerMiB, 2)} ms/MiB fresh, ${fmt(touch.residentMsPerMiB, 3)} resident`}\n`)
  if (ceiling) process.stderr.write(`SIMD ceiling: ${typeof ceiling === 'string' ? ceiling : ceiling.map((c) => `${c.kind} ${c.threads}t ${fmt(c.gflops)} GFLOP/s`).join(', ')}\n`)
  const titles: Record<string, string> = {
    TRAIN: `training step of the demo's VQ-VAE (FSQ, Adam; forward + gradients + update as one program), batch ${quick ? 16 : 64}`,
    OVH: 'per-call overhead: warm compiled x + 1 on 4 floats',
  }
  for (const w of workloads) titles[w.id] = w.title(quick)
  try {
    const childEntry = await bundleChild(here, bundleDir)
    const report = (wid: string, r: ChildResult) => {
      const mem = r.rssPeakMB ? `; RSS peak ${fmt(r.rssPeakMB, 0)} MiB${r.rssPeakTimedMB ? ` (timed calls ${fmt(r.rssPeakTimedMB, 0)})` : ''}, base ${fmt(r.rssBaseMB, 0)}${r.rssStagesMB ? `, after inputs ${fmt(r.rssStagesMB.inputs, 0)}, setup ${fmt(r.rssStagesMB.setup, 0)}, first call ${fmt(r.rssStagesMB.firstCall, 0)}` : ''}` : ''
      const first = r.setupMs !== undefined && r.firstRunMs !== undefined ? `; first call ${fmt(r.setupMs + r.firstRunMs, 1)} ms (setup ${fmt(r.setupMs, 1)} + run ${fmt(r.firstRunMs, 1)}${r.loadMs !== undefined ? `; load ${fmt(r.loadMs, 1)}` : ''})` : ''
      process.stderr.write(`${wid} ${r.impl}: ${r.status} ${fmt(r.medianMs, 2)} ms${first}${mem}${r.note ? ` (${r.note})` : ''}\n`)
      results.push(r)
    }
    let torchPython: ReturnType<typeof findTorchPython> | undefined
    const torchRun = (wid: string, impl: string): Promise<ChildResult> => {
      torchPython ??= findTorchPython()
      return 'why' in torchPython
        ? Promise.resolve({ workload: wid, impl, status: 'skipped', note: torchPython.why, rssBaseMB: 0, rssPeakMB: 0 })
        : runTorch(impl, torchPython.python, quick, tmp, refFileOf(wid), maxSeconds)
    }
    for (const wid of ids) {
      // the float32-only row differs from fast-wasm-2t only where a nearest-code search is screened
      const list = impls.filter((i) => !(wid === 'OVH' && i.includes('gpujs-cpu')) && !(i === SCREENLESS && !FLOP_ROWS.includes(wid)))
      const batches = quick ? [list] : list.map((i) => [i])
      const firsts: ChildResult[] = []
      for (const batch of batches) firsts.push(...(await runChild(childEntry, wid, batch)))
      if (wid === 'TRAIN') for (const impl of torchImpls) firsts.push(await torchRun(wid, impl))
      // later rounds: the rows worth timing again, in reversed order every other round
      const later = new Map<string, ChildResult[]>()
      const again = firsts.filter(rerun)
      for (let round = 2; round <= rounds; round++) {
        for (const r of round % 2 === 0 ? [...again].reverse() : again) {
          process.stderr.write(`${wid} ${r.impl}: round ${round}\n`)
          const [res] = TORCH_IMPLS[r.impl] ? [await torchRun(wid, r.impl)] : await runChild(childEntry, wid, [r.impl], true)
          later.set(r.impl, [...(later.get(r.impl) ?? []), res!])
        }
      }
      for (const r of firsts) report(wid, mergeRounds(r, later.get(r.impl) ?? []))
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true })
    rmSync(bundleDir, { recursive: true, force: true })
  }
  const m = machine()
  const md = renderTable(results, titles, m, started, ceiling, touch)
  console.log(md)
  if (opts.write) {
    mkdirSync(opts.out, { recursive: true })
    const stamp = started.toISOString().slice(0, 16).replace(/[:T]/g, '-')
    const host = `${m.cores}core-${m.cpu.replace(/[^A-Za-z0-9]+/g, '-').replace(/-+$/, '')}${quick ? '-quick' : ''}`
    const base = join(opts.out, `${stamp}-${host}`)
    writeFileSync(`${base}.md`, md)
    writeFileSync(`${base}.json`, JSON.stringify({ started: started.toISOString(), quick, machine: m, ...(ceiling ? { simdCeiling: ceiling } : {}), ...(touch ? { firstTouch: touch } : {}), results }, null, 2))
    console.log(`written: ${base}.md and .json`)
  }
}

/** Issues 6 and 16: W1's and W1b's whole-process peak RSS under 3x the bytes of its inputs and outputs. */
const MEMORY_TARGET: Readonly<Record<string, number>> = { W1: 3, W1b: 3 }

const measured = (r: ChildResult) => (r.status === 'ok' || r.status === 'mismatch') && r.ioMB !== undefined && r.rssPeakMB > 0

function memoryCells(r: ChildResult): string {
  if (!(r.rssPeakMB > 0)) return '– | – | – | – | –'
  const io = r.ioMB
  return `${fmt(r.rssPeakMB, 0)} | ${fmt(r.rssBaseMB, 0)} | ${fmt(r.rssPeakMB - r.rssBaseMB, 0)} | ${fmt(io)} | ${io ? (r.rssPeakMB / io).toFixed(2) + 'x' : '–'}`
}

function memoryTargetLine(rs: readonly ChildResult[], factor: number): string {
  const ok = rs.filter((r) => measured(r) && r.rssPeakMB < factor * r.ioMB!)
  const over = rs.filter((r) => measured(r) && !ok.includes(r))
  const names = (xs: readonly ChildResult[]) => (xs.length ? xs.map((r) => `${r.impl} (${(r.rssPeakMB / r.ioMB!).toFixed(2)}x)`).join(', ') : 'none')
  const io = rs.find(measured)?.ioMB
  return `Memory target (issues 6 and 16): whole-process peak RSS below ${factor}x I/O${io ? ` (${factor} x ${fmt(io)} = ${fmt(factor * io, 0)} MiB with int32 indices)` : ''}. Met: ${names(ok)}. Not met: ${names(over)}.`
}

/**
 * Issue 16's first-call target for the fast backend's rows: the first call (setup: trace and
 * compile, plus the first run) at most 3x the row's median plus the reference's setup (its trace;
 * its compile is trivial). Module load and backend start are reported beside it, not counted.
 */
function firstCallTargetLine(rs: readonly ChildResult[], touch?: FirstTouch): string | undefined {
  const refSetup = rs.find((r) => r.impl === REFERENCE)?.setupMs
  const fast = rs.filter((r) => r.impl.startsWith('tessera/fast-') && r.status === 'ok' && r.medianMs !== undefined && r.setupMs !== undefined && r.firstRunMs !== undefined)
  if (refSetup === undefined || !fast.length) return undefined
  const cell = (r: ChildResult) => `${r.impl} (${fmt(r.setupMs! + r.firstRunMs!, 1)} vs ${fmt(3 * r.medianMs! + refSetup, 1)})`
  const ok = fast.filter((r) => r.setupMs! + r.firstRunMs! <= 3 * r.medianMs! + refSetup)
  const over = fast.filter((r) => !ok.includes(r))
  const names = (xs: readonly ChildResult[]) => (xs.length ? xs.map(cell).join(', ') : 'none')
  const outMB = fast.find((r) => r.outMB !== undefined)?.outMB
  // the first call writes its outputs into fresh arrays: that alone costs this much here
  const floor = touch && outMB !== undefined ? ` Writing the outputs (${fmt(outMB, 2)} MiB) into fresh memory alone costs ${fmt(outMB * touch.freshMsPerMiB, 1)} ms of a first call on this machine (${fmt(outMB * touch.residentMsPerMiB, 2)} ms into memory already written once).` : ''
  return `First-call target (issue 16): setup (trace + compile) + first run at most 3x the median plus the reference's setup (its trace, ${fmt(refSetup, 1)} ms), as "first call vs allowed" in ms; load not counted. Met: ${names(ok)}. Not met: ${names(over)}.${floor}`
}

/** Timed calls, per round where there were several. */
const runsCell = (r: ChildResult): string => (r.rounds ? r.rounds.map((x) => x.runs).join('+') : String(r.runs ?? '–'))

/** The row's note, after its rounds' medians where there were several. */
function noteCell(r: ChildResult): string {
  const rounds = r.rounds ? `rounds ${r.rounds.map((x) => fmt(x.medianMs, 2)).join(' / ')} ms` : ''
  return [rounds, r.note ?? ''].filter(Boolean).join('; ')
}

/** "total (setup + run; load)" of the first call, in ms. */
function firstCall(r: ChildResult): string {
  if (r.setupMs === undefined || r.firstRunMs === undefined) return '–'
  return `${fmt(r.setupMs + r.firstRunMs, 1)} (${fmt(r.setupMs, 1)} + ${fmt(r.firstRunMs, 1)}${r.loadMs !== undefined ? `; load ${fmt(r.loadMs, 1)}` : ''})`
}

/** Workloads whose Tessera wasm rows report their GFLOP/s as a fraction of the SIMD ceiling. */
const FLOP_ROWS = ['W1', 'W1b', 'RVQ']
/** Tessera with every distance in float32: the one nearest-code row the SIMD ceiling bounds. */
const SCREENLESS = 'tessera/fast-wasm-f32-2t'

/**
 * The ceiling row that bounds a Tessera implementation: its threads, and fused or separate
 * multiply-adds; a screened one (most distances in int16, see SCREENLESS) the int16 dot row.
 */
function ceilingOf(impl: string, ceiling: readonly CeilingRow[]): CeilingRow | undefined {
  const t = /-(\d)t$/.exec(impl)
  if (!t || !impl.includes('wasm')) return undefined
  const screened = impl.startsWith('tessera/fast-wasm') && impl !== SCREENLESS
  const kind = screened ? 'int16 dot' : impl.includes('relaxed') ? 'relaxed madd' : 'mul+add'
  return ceiling.find((c) => c.kind === kind && c.threads === Number(t[1]))
}

/**
 * The least time a screened search can take on two threads (every distance's int16 dot product at
 * the int16 ceiling, nothing else), against the fastest peer: the bound on the 0.8x targets.
 */
function int16BoundLine(flops: number, peerBest: number, ceiling: readonly CeilingRow[]): string | undefined {
  const c = ceiling.find((x) => x.kind === 'int16 dot' && x.threads === 2)
  if (!c || !Number.isFinite(peerBest)) return undefined
  const ms = flops / (c.gflops * 1e6)
  return `Int16 bound (issue 16's 0.8x targets): a screened search on 2 threads computes every distance's int16 dot product, ${fmt(flops / 1e9)} GFLOP a call, so at the int16 ceiling (${fmt(c.gflops)} GFLOP/s) it takes at least ${fmt(ms, 2)} ms: ${(ms / peerBest).toFixed(2)}x the fastest peer's median.`
}

function firstTouchSection(touch: FirstTouch | string): string[] {
  if (typeof touch === 'string') return ['## Fresh memory', '', touch, '']
  return [
    '## Fresh memory: the first write to each page (`pnpm bench:first-touch`)',
    '',
    `Measured at the start of this run in a fresh process: filling new 8 MiB Float32Arrays took ${fmt(touch.freshMsPerMiB, 2)} ms per MiB the first time and ${fmt(touch.residentMsPerMiB, 3)} ms per MiB the second (median of 5 arrays, all kept alive). The difference is the page faults of the first write. A first call writes its outputs into fresh arrays, so each workload's first-call line gives what that alone costs here; later calls mostly get memory that earlier calls' collected outputs had already faulted in.`,
    '',
  ]
}

function ceilingSection(ceiling: readonly CeilingRow[] | string): string[] {
  if (typeof ceiling === 'string') return ['## SIMD ceiling', '', ceiling, '']
  return [
    '## SIMD ceiling: f32x4 multiply-add and int16 dot throughput (`pnpm bench:ceiling`)',
    '',
    'Measured at the start of this run: independent chains of `acc = acc * x + y` with every operand in registers, in worker threads started together; best of 9, 2 flops per multiply-add. It bounds any WebAssembly SIMD kernel on this machine (native code with wider vectors is not bound by it). "int16 dot" is `acc = dot(acc, x) + y` with i32x4.dot_i16x8_s (8 multiply-adds per instruction): it bounds the screened nearest-code kernels, which compute every distance\'s int16 dot product (and a few in float32 as well). The W1, W1b and RVQ tables give each Tessera wasm row\'s GFLOP/s (2 n k d flops a call, however computed) as a fraction of the row here with the same threads and kind: "of ceiling" for float32 kernels, "of int16 ceiling" for screened ones.',
    '',
    '| kind | threads | GFLOP/s |',
    '|---|---|---|',
    ...ceiling.map((c) => `| ${c.kind} | ${c.threads} | ${fmt(c.gflops)} |`),
    '',
  ]
}

function renderTable(results: ChildResult[], titles: Record<string, string>, m: ReturnType<typeof machine>, started: Date, ceiling?: readonly CeilingRow[] | string, touch?: FirstTouch | string): string {
  const lines: string[] = []
  lines.push(`# Tessera benchmarks ${quick ? '(quick sizes)' : ''}`.trim(), '')
  lines.push(`${started.toISOString()} · ${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB · Node ${m.node} · ${m.platform} · load average at the end ${m.loadavg.join(' ')}`, '')
  lines.push(
    quick
      ? 'Median of at least 5 timed calls after warm-up; --quick: one process per workload (the reference included); each implementation\'s peak RSS is measured from its own start, but the process holds what earlier ones loaded. Inputs and outputs are host typed arrays.'
      : `Median of at least 5 timed calls after warm-up (at least ${WARM_UP.calls} calls and ${WARM_UP.ms} ms, within the first second), one process per workload and implementation. Inputs and outputs are host typed arrays.${rounds > 1 ? ` Rounds: every implementation whose calls take under ${ROUND_MAX_MS / 1000} s ran in ${rounds} processes, the order of implementations reversed every other round, so that peers and Tessera meet the same windows of this shared machine's load; its "median" is the median of the rounds' medians (each listed in "note"), "min" the least call of all rounds, "runs" the timed calls per round, and its first call the round whose first call was the median one. Memory comes from the first round (the later ones make no memory calls).` : ''}`,
    '',
    'Memory (MiB = 2^20 bytes): "peak RSS" is the whole measured process\'s peak resident set (VmHWM: node, the harness, the implementation\'s code, worker threads, native and wasm memory, inputs, live outputs) from its start to the end of the memory calls: calls after the first, each made with the previous outputs dropped and collected, until the peak stops growing (3-10 calls, before the timed ones). The timed calls run without forced collections; their peak, which also counts earlier outputs V8 had not yet collected, is `rssPeakTimedMB` in the JSON and "timed calls" on the progress line. The check against the reference is not counted. "base" is the process\'s RSS before the inputs exist (plain `node` on a bundle, no tsx); "peak − base" is what the inputs, the implementation and its outputs added. "I/O" is the bytes of the inputs plus this implementation\'s outputs.',
  )
  if (results.some((r) => r.impl.includes('relaxed')))
    lines.push('`fast-wasm-relaxed-2t`: the nearest-code kernel with relaxed SIMD fused multiply-adds; on Node 20 its process runs with `--experimental-wasm-relaxed-simd` (on by default in Node >= 22 and Chrome >= 114). `fast-wasm-1t`/`-2t` use separate multiplies and adds. These three screen nearest-code searches with int16 dot products and compute in float32 only the distances the int16 bounds cannot rule out (same indices as computing all of them); `fast-wasm-f32-2t` (nearest-code workloads only) computes every distance in float32, the kernel the float32 SIMD ceiling bounds.', '')
  lines.push('"vs peer": time divided by the fastest peer\'s (onnxruntime-node, tfjs-cpu, tfjs-wasm, plain JS, PyTorch); below 1 is faster. Indices are checked against the CPU reference; "ties" counts rows where an index differs only between equally near candidates.', '')
  lines.push('"first call" (as issue 16 defines it: trace plus compile plus first run): in a fresh process with the inputs ready and the implementation loaded, its setup (Tessera: program traced and compiled; ONNX: model built and session created; tfjs: constants prepared; PyTorch: model and optimizer built) plus the first call, as "total (setup + run)" in ms. "load" beside it is what came before, also paid once per process: the implementation\'s module imported and its backend or runtime started (Tessera: the backend package and its backend object; ONNX: `onnxruntime-node`; tfjs: the backend set and ready; PyTorch: `import torch`). The median is of calls after warm-up. Each workload\'s "Configuration" list says how every implementation was set up and how the computation is written (threads, graph optimizations, operand forms).', '')
  if (ceiling) lines.push(...ceilingSection(ceiling))
  if (touch) lines.push(...firstTouchSection(touch))
  const byW = new Map<string, ChildResult[]>()
  for (const r of results) byW.set(r.workload, [...(byW.get(r.workload) ?? []), r])
  for (const [wid, rs] of byW) {
    const w = workloads.find((x) => x.id === wid)
    const vectors = w?.vectors(quick) ?? (wid === 'TRAIN' ? (quick ? 16 : 64) : 1)
    lines.push(`## ${wid}: ${titles[wid] ?? ''}`, '')
    const peerBest = Math.min(...rs.filter((r) => PEERS.includes(r.impl) && r.status === 'ok' && r.medianMs !== undefined).map((r) => r.medianMs!))
    const flops = w?.flops?.(quick)
    if (wid === 'OVH') lines.push('| implementation | status | median µs/call | min µs | first call ms (setup + run; load) | runs | peak RSS MiB |', '|---|---|---|---|---|---|---|')
    else
      lines.push(
        `| implementation | status | median ms | min ms | first call ms (setup + run; load) | vectors/s |${flops ? ' GFLOP/s |' : ''} vs peer | runs | ties | peak RSS MiB | base | peak − base | I/O MiB | peak / I/O | note |`,
        `|---|---|---|---|---|---|${flops ? '---|' : ''}---|---|---|---|---|---|---|---|---|`,
      )
    for (const r of rs) {
      if (wid === 'OVH') {
        lines.push(`| ${r.impl} | ${r.status} | ${fmt(r.medianMs !== undefined ? r.medianMs * 1000 : undefined)} | ${fmt(r.minMs !== undefined ? r.minMs * 1000 : undefined)} | ${firstCall(r)} | ${runsCell(r)} | ${fmt(r.rssPeakMB, 0)} |`)
        continue
      }
      const ms = r.status === 'ok' || r.status === 'mismatch' ? r.medianMs : undefined
      const vps = ms ? vectors / (ms / 1000) : undefined
      const gf = ms && flops ? flops / (ms / 1000) / 1e9 : undefined
      const ratio = ms && Number.isFinite(peerBest) ? ms / peerBest : undefined
      const bound = gf && FLOP_ROWS.includes(wid) && ceiling && typeof ceiling !== 'string' ? ceilingOf(r.impl, ceiling) : undefined
      const gfCell = bound ? `${fmt(gf)} (${Math.round((100 * gf!) / bound.gflops)}% of ${bound.kind === 'int16 dot' ? 'int16 ' : ''}ceiling)` : fmt(gf)
      lines.push(
        `| ${r.impl} | ${r.status} | ${fmt(ms, 2)} | ${fmt(r.minMs, 2)} | ${firstCall(r)} | ${vps ? (vps / 1e6).toFixed(2) + ' M' : '–'} |${flops ? ` ${gfCell} |` : ''} ${ratio ? ratio.toFixed(2) + 'x' : '–'} | ${runsCell(r)} | ${r.ties ?? '–'} | ${memoryCells(r)} | ${noteCell(r)} |`,
      )
    }
    lines.push('')
    // --quick shares one process among implementations: its peaks say nothing about the target
    const limit = MEMORY_TARGET[wid]
    if (limit && !quick) lines.push(memoryTargetLine(rs, limit), '')
    const firstLine = quick ? undefined : firstCallTargetLine(rs, typeof touch === 'object' ? touch : undefined)
    if (firstLine) lines.push(firstLine, '')
    const boundLine = flops && FLOP_ROWS.includes(wid) && ceiling && typeof ceiling !== 'string' ? int16BoundLine(flops, peerBest, ceiling) : undefined
    if (boundLine) lines.push(boundLine, '')
    const configured = rs.filter((r) => r.config)
    if (configured.length) lines.push(`Configuration (${wid}):`, '', ...configured.map((r) => `- \`${r.impl}\`: ${r.config}`), '')
  }
  return lines.join('\n')
}

void main()
