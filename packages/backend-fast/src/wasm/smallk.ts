import { TesseraError } from '@tessera/core'
import { Code, I32, V128, assemble } from './asm.js'

/**
 * A WebAssembly SIMD matmul for a small inner dimension (LFQ's entropy logits: k = 10, n = 1024),
 * used by row-blocked chains: out (m x n) = a (m x k) @ b (k x n) for one block of rows.
 *
 * Numerics are the reference's bit for bit: each output starts from +0 and adds its k products in
 * order in float64 (a product of two float32 values is exact in float64), then rounds once to
 * float32 (f32x4.demote_f64x2_zero rounds to nearest, ties to even, as Math.fround does). The
 * two float64 lanes are two output columns, so no output's sum is reordered.
 *
 * Memory (one instance per thread, its own memory): b as float64 (k x n, row-major) at 0, one
 * block of a as float64 scalars at `aBase` (read with load64_splat), the block's output at `oBase`.
 * The loops run 2 rows x 4 columns per register tile (4 accumulators), k unrolled with literal
 * offsets; a last odd row takes a 1-row pass.
 */
export interface SmallKLayout {
  readonly k: number
  readonly n: number
  /** Most rows one call may take. */
  readonly rows: number
  readonly aBase: number
  readonly oBase: number
  readonly pages: number
}

/** Inner dimensions up to which the kernel is used (k products unrolled per tile). */
export const SMALL_K_MAX = 16

/** Whether an (m x k) @ (k x n) float32 matmul fits the kernel. */
export function smallKFits(k: number, n: number): boolean {
  return k >= 1 && k <= SMALL_K_MAX && n >= 4 && n % 4 === 0
}

export function smallKLayout(k: number, n: number, rows: number): SmallKLayout {
  if (!smallKFits(k, n)) throw new TesseraError('backend', 'fast.smallK', `the small-k matmul kernel takes k <= ${SMALL_K_MAX} and n a multiple of 4 (got k = ${k}, n = ${n})`)
  const aBase = 8 * k * n
  const oBase = aBase + 8 * rows * k
  const end = oBase + 4 * rows * n
  return { k, n, rows, aBase, oBase, pages: Math.max(1, Math.ceil(end / 65536)) }
}

export function smallKModule(L: SmallKLayout, TR = 2): WebAssembly.Module {
  const { k, n, aBase, oBase } = L
  const c = new Code(1)
  const m = 0
  const i = c.local(I32), aP = c.local(I32), oP = c.local(I32), bP = c.local(I32)
  const acc = Array.from({ length: 2 * TR }, () => c.local(V128))
  const y = [c.local(V128), c.local(V128)]
  const x = Array.from({ length: TR }, () => c.local(V128))

  /** One pass over all columns for rows i .. i + R - 1. */
  const pass = (R: number) => {
    c.get(i).i32(k * 8).i32Mul().i32(aBase).i32Add().set(aP)
    c.get(i).i32(n * 4).i32Mul().i32(oBase).i32Add().set(oP)
    c.i32(0).set(bP)
    c.block().loop()
    for (let a = 0; a < 2 * R; a++) c.vConstF32([0, 0, 0, 0]).set(acc[a]!)
    for (let t = 0; t < k; t++) {
      for (let v = 0; v < 2; v++) c.get(bP).vLoad(t * n * 8 + v * 16).set(y[v]!)
      for (let r = 0; r < R; r++) c.get(aP).vLoad64Splat((r * k + t) * 8).set(x[r]!)
      for (let r = 0; r < R; r++)
        for (let v = 0; v < 2; v++) c.get(acc[2 * r + v]!).get(x[r]!).get(y[v]!).f64x2Mul().f64x2Add().set(acc[2 * r + v]!)
    }
    for (let r = 0; r < R; r++)
      for (let v = 0; v < 2; v++) c.get(oP).get(acc[2 * r + v]!).f32x4DemoteF64x2Zero().vStore64Lane(r * n * 4 + v * 8, 0)
    c.get(oP).i32(16).i32Add().set(oP)
    c.get(bP).i32(32).i32Add().tee(bP).i32(n * 8).i32LtU().brIf(0)
    c.end().end()
  }

  c.i32(0).set(i)
  c.block().loop()
  c.get(i).i32(TR).i32Add().get(m).i32GtU().brIf(1)
  pass(TR)
  c.get(i).i32(TR).i32Add().set(i).br(0)
  c.end().end()
  // the last rows one at a time
  c.block().loop()
  c.get(m).get(i).i32LeU().brIf(1)
  pass(1)
  c.get(i).i32(1).i32Add().set(i).br(0)
  c.end().end()
  return new WebAssembly.Module(assemble(L.pages, [{ name: 'run', code: c }]) as BufferSource)
}

export interface SmallKRunner {
  /** Forget the packed b (its contents may change between calls while the array stays the same). */
  begin(): void
  run(a: Float32Array, b: Float32Array, out: Float32Array, m: number): void
}

/**
 * The JS side of one kernel instance, self-contained (worker threads rebuild it from
 * `smallKRunnerFactory.toString()` and get the compiled module through workerData).
 */
export function smallKRunnerFactory(): (module: WebAssembly.Module, L: SmallKLayout) => SmallKRunner {
  return (module, L) => {
    const memory = new WebAssembly.Memory({ initial: L.pages, maximum: L.pages, shared: true })
    const run = (new WebAssembly.Instance(module, { env: { memory } }).exports as { run: (m: number) => void }).run
    const { k, n } = L
    const b64 = new Float64Array(memory.buffer, 0, k * n)
    const a64 = new Float64Array(memory.buffer, L.aBase, L.rows * k)
    const o32 = new Float32Array(memory.buffer, L.oBase, L.rows * n)
    let packed: Float32Array | undefined
    return {
      begin() {
        packed = undefined
      },
      run(a, b, out, m) {
        if (m > L.rows) throw new Error(`fast backend: the small-k matmul kernel was given ${m} rows, it holds ${L.rows}`)
        if (packed !== b) {
          // Float64Array.set converts each float32 exactly
          b64.set(b.length === k * n ? b : b.subarray(0, k * n))
          packed = b
        }
        a64.set(a.length === m * k ? a : a.subarray(0, m * k))
        run(m)
        out.set(m * n === o32.length ? o32 : o32.subarray(0, m * n))
      },
    }
  }
}
