/**
 * The WebAssembly SIMD ceiling of this machine: f32x4 multiply-add throughput with every operand
 * in registers, on 1 and 2 threads, as separate multiplies and adds and as relaxed SIMD's fused
 * multiply-add; and the int16 dot product's (i32x4.dot_i16x8_s and an add, 8 multiply-adds),
 * which bounds the screened nearest-code kernels the same way. The nearest-code rows (W1, W1b,
 * RVQ) report their GFLOP/s as a fraction of it.
 *
 * `pnpm bench:ceiling [--json]` runs it alone; `pnpm bench` runs it at the start of a run (in a
 * child process with relaxed SIMD enabled) and writes it into the results.
 */
import { Worker } from 'node:worker_threads'
import { Code, relaxedSimdSupported } from '../../packages/backend-fast/src/wasm/asm.js'
import { CHAINS, UNROLL, chainKernel } from './chain-kernel.js'

export interface CeilingRow {
  readonly kind: 'mul+add' | 'relaxed madd' | 'int16 dot'
  readonly threads: number
  /** Best of the repeats, 2 flops per multiply-add (8 multiply-adds per int16 dot, 4 per float32 one). */
  readonly gflops: number
}

/**
 * `run(iters)`: CHAINS accumulators, each updated UNROLL times per iteration with a multiply and an
 * add (or one relaxed madd) of register operands; the sum is stored so that nothing is dead code.
 * The int16 form multiplies the accumulator's own lanes (`acc = dot(acc, x) + y`): a dot of two
 * loop-invariant operands would be computed once by TurboFan, leaving only the adds.
 */
function kernel(kind: CeilingRow['kind']): Uint8Array {
  return chainKernel(new Code(1), (c, a, x, y) => {
    if (kind === 'relaxed madd') c.get(a).get(x).get(y).f32x4RelaxedMadd().set(a)
    else if (kind === 'int16 dot') c.get(a).get(x).i32x4DotI16x8S().get(y).i32x4Add().set(a)
    else c.get(a).get(x).f32x4Mul().get(y).f32x4Add().set(a)
  })
}

const WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { bytes, iters, flag } = workerData
const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true })
const run = new WebAssembly.Instance(new WebAssembly.Module(bytes), { env: { memory } }).exports.run
// Liftoff code first: TurboFan's tier-up takes effect at a later call, so warm up with many calls
for (let i = 0; i < 40; i++) run(50000)
const f = new Int32Array(flag)
Atomics.add(f, 1, 1)
Atomics.notify(f, 1)
Atomics.wait(f, 0, 0)
const t0 = performance.now()
run(iters)
parentPort.postMessage(performance.now() - t0)
`

/** Wall time of `threads` workers running `iters` iterations each from one start signal. */
async function timed(bytes: Uint8Array, iters: number, threads: number): Promise<number> {
  const flag = new SharedArrayBuffer(8)
  const f = new Int32Array(flag)
  const workers = Array.from({ length: threads }, () => new Worker(WORKER, { eval: true, workerData: { bytes, iters, flag } }))
  const done = workers.map((w) => new Promise<number>((resolve, reject) => { w.once('message', resolve); w.once('error', reject) }))
  while (Atomics.load(f, 1) < threads) await new Promise((r) => setTimeout(r, 1))
  const t0 = performance.now()
  Atomics.store(f, 0, 1)
  Atomics.notify(f, 0)
  await Promise.all(done)
  const wall = performance.now() - t0
  await Promise.all(workers.map((w) => w.terminate()))
  return wall
}

export async function measureCeiling(repeats = 9): Promise<CeilingRow[]> {
  const rows: CeilingRow[] = []
  const kinds: CeilingRow['kind'][] = ['mul+add']
  if (relaxedSimdSupported()) kinds.push('relaxed madd')
  kinds.push('int16 dot')
  for (const kind of kinds) {
    const bytes = kernel(kind)
    for (const threads of [1, 2]) {
      const iters = 2_000_000
      let best = Infinity
      for (let r = 0; r < repeats; r++) best = Math.min(best, await timed(bytes, iters, threads))
      // 2 flops per multiply-add: 4 per float32 op, 8 per int16 dot
      const flops = iters * UNROLL * CHAINS * 2 * (kind === 'int16 dot' ? 8 : 4) * threads
      rows.push({ kind, threads, gflops: flops / (best * 1e6) })
    }
  }
  return rows
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\//, ''))
if (isMain && !relaxedSimdSupported() && Number(process.versions.node.split('.')[0]) < 22 && !process.env.TESSERA_CEILING_CHILD) {
  // Node 20 has relaxed SIMD behind a flag: run again with it
  const { spawnSync } = await import('node:child_process')
  const r = spawnSync(process.execPath, [...process.execArgv, '--experimental-wasm-relaxed-simd', ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, TESSERA_CEILING_CHILD: '1' } })
  process.exit(r.status ?? 1)
} else if (isMain) {
  const rows = await measureCeiling()
  if (process.argv.includes('--json')) process.stdout.write(JSON.stringify(rows) + '\n')
  else for (const r of rows) console.log(`${r.kind.padEnd(13)} ${r.threads}t  ${r.gflops.toFixed(1)} GFLOP/s`)
}
