/**
 * W1 on fastBackend({ threads: 2 }) in one process: the whole program (indices and the gathered
 * codes) against the indices alone, alternated 40 times; prints each one's median and minimum
 * and the GFLOP/s at the minimum. argv: `plain` for relaxedSimd: false (default: relaxed SIMD,
 * which Node 20 runs with --experimental-wasm-relaxed-simd; `pnpm bench:probe` passes it).
 */
import type { Executable, Tensor } from '@tessera/core'
import { traceOrThrow } from '@tessera/core'
import { fastBackend } from '@tessera/backend-fast'
import { nearestProgram } from '../programs.js'

const [n, d, k] = [16384, 64, 1024]
const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
const backend = fastBackend({ threads: 2, relaxedSimd: process.argv[2] !== 'plain' })
const indicesOnly = traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => [
  x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1),
]).program
const filled = (len: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 12.9898) * 1.3)
const ins = [
  { shape: [n, d], dtype: 'float32' as const, data: filled(n * d) },
  { shape: [k, d], dtype: 'float32' as const, data: filled(k * d) },
]
const exes: Record<string, Executable> = { whole: backend.compile(nearestProgram(n, d, k)), indices: backend.compile(indicesOnly) }
const times: Record<string, number[]> = { whole: [], indices: [] }
for (let r = 0; r < 40; r++)
  for (const key of r % 2 ? ['whole', 'indices'] : ['indices', 'whole']) {
    const t = performance.now()
    await exes[key]!.run(ins)
    times[key]!.push(performance.now() - t)
  }
for (const [key, v] of Object.entries(times)) {
  v.sort((a, b) => a - b)
  console.log(key, 'median', v[20]!.toFixed(2), 'min', v[0]!.toFixed(2), 'GFLOP/s at min', ((2 * n * d * k) / v[0]! / 1e6).toFixed(1))
}
await backend.dispose?.()
process.exit(0)
