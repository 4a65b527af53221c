/** The register-only kernel of the throughput microbenchmarks (simd-ceiling.ts, probes/int-dots.ts). */
import type { Code } from '../../packages/backend-fast/src/wasm/asm.js'
import { V128, assemble } from '../../packages/backend-fast/src/wasm/asm.js'

/** Independent accumulator chains: enough to cover the add (or FMA, or dot) latency on every port. */
export const CHAINS = 12
/** Updates per chain per iteration of `run(iters)`. */
export const UNROLL = 4

/**
 * `run(iters)` over CHAINS accumulators, each updated UNROLL times an iteration by `update(c,
 * acc, x, y)` with x and y fixed registers; the accumulators' sum is stored so that nothing is
 * dead code. On a shared memory (the workers'), unless `shared` is false.
 */
export function chainKernel<C extends Code>(c: C, update: (c: C, acc: number, x: number, y: number) => void, shared = true): Uint8Array {
  const acc = Array.from({ length: CHAINS }, () => c.local(V128))
  const x = c.local(V128), y = c.local(V128)
  c.vConstF32([1.0000001, 0.9999999, 1.0000002, 0.9999998]).set(x)
  c.vConstF32([1e-7, 2e-7, 3e-7, 4e-7]).set(y)
  c.loop()
  for (let u = 0; u < UNROLL; u++) for (const a of acc) update(c, a, x, y)
  c.get(0).i32(1).i32Sub().tee(0).brIf(0)
  c.end()
  c.i32(0)
  c.get(acc[0]!)
  for (let i = 1; i < CHAINS; i++) c.get(acc[i]!).f32x4Add()
  c.vStore(0)
  return assemble(1, [{ name: 'run', code: c }], shared)
}

