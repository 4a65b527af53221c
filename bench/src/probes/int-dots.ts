/**
 * Multiply-add throughput of WebAssembly's integer dot products on one thread, beside relaxed
 * SIMD's float32 madd: what an int8 screen of the nearest-code search could gain over the int16 one
 * (bench/README.md, section of 2026-12-07 09:30-11:40 UTC). Chains as in simd-ceiling.ts (chain-kernel.ts), each
 * dot taking the accumulator as an operand so TurboFan cannot compute it once for the loop.
 * Run through `pnpm bench:probe int-dots` (relaxed SIMD enabled on Node 20).
 */
import { Code } from '../../../packages/backend-fast/src/wasm/asm.js'
import { CHAINS, UNROLL, chainKernel } from '../chain-kernel.js'

/** The relaxed-SIMD integer opcodes the backend's assembler has no use for. */
class DotCode extends Code {
  private op(lo: number, hi: number) {
    this.bytes.push(0xfd, lo, hi)
    return this
  }
  /** i16x8.relaxed_dot_i8x16_i7x16_s: 16 multiply-adds into 8 int16 lanes (pairs summed). */
  dotI8I7() { return this.op(0x92, 0x02) }
  /** i32x4.relaxed_dot_i8x16_i7x16_add_s: 16 multiply-adds into 4 int32 lanes, plus an accumulator. */
  dotI8I7Add() { return this.op(0x93, 0x02) }
  i16x8Add() { return this.op(0x8e, 0x01) }
}

type Kind = 'i32x4.dot_i16x8_s + i32x4.add' | 'i16x8.relaxed_dot_i8x16_i7x16_s + i16x8.add' | 'i32x4.relaxed_dot_i8x16_i7x16_add_s' | 'f32x4.relaxed_madd'
const MACS: Record<Kind, number> = {
  'i32x4.dot_i16x8_s + i32x4.add': 8,
  'i16x8.relaxed_dot_i8x16_i7x16_s + i16x8.add': 16,
  'i32x4.relaxed_dot_i8x16_i7x16_add_s': 16,
  'f32x4.relaxed_madd': 4,
}
const ITERS = 2_000_000

function kernel(kind: Kind): Uint8Array {
  return chainKernel(new DotCode(1), (c, a, x, y) => {
    if (kind === 'i32x4.dot_i16x8_s + i32x4.add') c.get(a).get(x).i32x4DotI16x8S().get(y).i32x4Add().set(a)
    else if (kind === 'i16x8.relaxed_dot_i8x16_i7x16_s + i16x8.add') c.get(a).get(x).dotI8I7().get(y).i16x8Add().set(a)
    else if (kind === 'i32x4.relaxed_dot_i8x16_i7x16_add_s') c.get(a).get(x).get(y).dotI8I7Add().set(a)
    else c.get(a).get(x).get(y).f32x4RelaxedMadd().set(a)
  }, false)
}

const memory = new WebAssembly.Memory({ initial: 1, maximum: 1 })
for (const kind of Object.keys(MACS) as Kind[]) {
  const module = new WebAssembly.Module(kernel(kind) as BufferSource)
  const run = new WebAssembly.Instance(module, { env: { memory } }).exports['run'] as (iters: number) => void
  // Liftoff first: TurboFan's code takes over after enough calls
  for (let i = 0; i < 40; i++) run(50000)
  let best = Infinity
  for (let r = 0; r < 7; r++) {
    const t = performance.now()
    run(ITERS)
    best = Math.min(best, performance.now() - t)
  }
  const ops = ITERS * CHAINS * UNROLL
  console.log(`${kind.padEnd(44)} ${(ops / best / 1e6).toFixed(2)} G instructions/s, ${((ops * MACS[kind]) / best / 1e6).toFixed(1)} G multiply-adds/s`)
}
