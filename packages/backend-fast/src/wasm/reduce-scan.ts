import { I32, V128, assemble } from './asm.js'
import { ChainCode, F64 } from './simd-ops.js'

/**
 * Whole-array scans of stored float32 arrays in WebAssembly SIMD, each exact (they test or
 * compare elements, no arithmetic reaches a result):
 * - whether every element is finite, and the 0/1 mask of finite elements (the quantizers'
 *   finite-value probe, run by a training step over its input and every new parameter): x * 0 is
 *   ±0 for a finite x and NaN for ±Inf and NaN, so a sum of those products is zero exactly when
 *   every element is finite, and `x * 0 == 0` is the mask;
 * - argmin of a vector, as the reference defines it: the first NaN's index, else the first least
 *   element's (-0 and +0 tie): one pass for the least value (f32x4.min keeps NaN), one for its
 *   first position (stops at the first vector holding it).
 *
 * - column sums of a (rows x cols) matrix (bias gradients), as the generated loop adds them: each
 *   column's rows in order into a float64 from +0 (float32 values widened exactly), rounded once.
 *
 * Memory: a 16-byte value slot at 0 (sums, the least value, the value searched for), an i32 at 16
 * (where the search stopped), then chunks of `CHUNK` floats copied in by the host, padded to
 * whole groups of 16 floats (so the module's memory stays in L2 however long the array), then the
 * column sums' float64 partials (up to MAX_COLS columns).
 */
const CHUNK = 65536
const DATA = 32
const SUMS = DATA + 4 * CHUNK
/** Widest matrix whose column sums run here (wider ones keep the generated loop). */
export const MAX_COLS = 8192

function moduleOf(pages: number): WebAssembly.Module {
  // all(bytes): four vector sums of x * 0 over the chunk, added and stored at 0
  const all = new ChainCode(1)
  {
    const p = all.local(I32)
    const acc = [0, 1, 2, 3].map(() => all.local(V128))
    for (const a of acc) all.vConstF32([0, 0, 0, 0]).set(a)
    all.i32(DATA).set(p)
    all.loop()
    acc.forEach((a, u) => all.get(a).get(p).vLoad(16 * u).vConstF32([0, 0, 0, 0]).f32x4Mul().f32x4Add().set(a))
    all.get(p).i32(64).i32Add().tee(p).get(0).i32LtU().brIf(0)
    all.end()
    all.i32(0).get(acc[0]!).get(acc[1]!).f32x4Add().get(acc[2]!).get(acc[3]!).f32x4Add().f32x4Add().vStore(0)
  }
  // flags(bytes): each element replaced by 1 where finite, 0 elsewhere
  const flags = new ChainCode(1)
  {
    const q = flags.local(I32)
    flags.i32(DATA).set(q)
    flags.loop()
    flags.get(q)
    flags.vConstF32([1, 1, 1, 1]).vConstF32([0, 0, 0, 0])
    flags.get(q).vLoad(0).vConstF32([0, 0, 0, 0]).f32x4Mul().vConstF32([0, 0, 0, 0]).f32x4Eq()
    flags.bitselect().vStore(0)
    flags.get(q).i32(16).i32Add().tee(q).get(0).i32LtU().brIf(0)
    flags.end()
  }
  // least(bytes): the lane-wise least of the chunk (NaN where a lane saw one), stored at 0
  const least = new ChainCode(1)
  {
    const p = least.local(I32)
    const acc = [0, 1, 2, 3].map(() => least.local(V128))
    for (const a of acc) least.vConstF32([Infinity, Infinity, Infinity, Infinity]).set(a)
    least.i32(DATA).set(p)
    least.loop()
    acc.forEach((a, u) => least.get(a).get(p).vLoad(16 * u).f32x4Min().set(a))
    least.get(p).i32(64).i32Add().tee(p).get(0).i32LtU().brIf(0)
    least.end()
    least.i32(0).get(acc[0]!).get(acc[1]!).f32x4Min().get(acc[2]!).get(acc[3]!).f32x4Min().f32x4Min().vStore(0)
  }
  /** find(bytes): the byte offset of the first vector with a lane equal to the value at 0 (NaN: with a NaN lane), or `bytes`, at 16. */
  const find = (nan: boolean) => {
    const c = new ChainCode(1)
    const p = c.local(I32)
    c.i32(DATA).set(p)
    c.block()
    c.loop()
    if (nan) c.get(p).vLoad(0).get(p).vLoad(0).f32x4Ne()
    else c.get(p).vLoad(0).i32(0).vLoad(0).f32x4Eq()
    c.vAnyTrue().brIf(1)
    c.get(p).i32(16).i32Add().tee(p).get(0).i32LtU().brIf(0)
    c.end()
    c.end()
    c.i32(16).get(p).i32Store(0)
    return c
  }
  return new WebAssembly.Module(
    assemble(
      pages,
      [
        { name: 'all', code: all }, { name: 'flags', code: flags }, { name: 'least', code: least }, { name: 'findEq', code: find(false) },
        { name: 'findNaN', code: find(true) }, { name: 'cols', code: columnsCode() }, { name: 'colsOut', code: columnsOutCode() },
      ],
      false,
    ) as BufferSource,
  )
}

/**
 * cols(cols, rows): adds `rows` (>= 1) rows of a matrix at DATA (rows of `cols` floats) to the
 * float64 partials at SUMS, row by row in order: eight columns at a time in four f64x2 sums, then
 * the last cols % 8 one at a time.
 */
function columnsCode(): ChainCode {
  const c = new ChainCode(2)
  const [cols, rows] = [0, 1]
  const j = c.local(I32), p = c.local(I32), r = c.local(I32), q = c.local(I32), stride = c.local(I32), s = c.local(F64)
  const acc = [0, 1, 2, 3].map(() => c.local(V128))
  c.get(cols).i32(4).i32Mul().set(stride)
  c.i32(0).set(j)
  c.block()
  c.loop()
  c.get(j).i32(8).i32Add().get(cols).i32GtU().brIf(1)
  c.get(j).i32(8).i32Mul().i32(SUMS).i32Add().set(q)
  acc.forEach((a, u) => c.get(q).vLoad(16 * u).set(a))
  c.get(j).i32(4).i32Mul().i32(DATA).i32Add().set(p)
  c.get(rows).set(r)
  c.loop()
  acc.forEach((a, u) => c.get(a).get(p).vLoad64Zero(8 * u).f64x2PromoteLowF32x4().f64x2Add().set(a))
  c.get(p).get(stride).i32Add().set(p)
  c.get(r).i32(1).i32Sub().tee(r).brIf(0)
  c.end()
  acc.forEach((a, u) => c.get(q).get(a).vStore(16 * u))
  c.get(j).i32(8).i32Add().set(j)
  c.br(0)
  c.end()
  c.end()
  c.block()
  c.loop()
  c.get(j).get(cols).i32GeU().brIf(1)
  c.get(j).i32(8).i32Mul().i32(SUMS).i32Add().tee(q).f64Load(0).set(s)
  c.get(j).i32(4).i32Mul().i32(DATA).i32Add().set(p)
  c.get(rows).set(r)
  c.loop()
  c.get(s).get(p).f32Load(0).f64PromoteF32().f64Add().set(s)
  c.get(p).get(stride).i32Add().set(p)
  c.get(r).i32(1).i32Sub().tee(r).brIf(0)
  c.end()
  c.get(q).get(s).f64Store(0)
  c.get(j).i32(1).i32Add().set(j)
  c.br(0)
  c.end()
  c.end()
  return c
}

/** colsOut(cols): the partials rounded to float32 (to nearest, ties to even) at DATA. */
function columnsOutCode(): ChainCode {
  const c = new ChainCode(1)
  const j = c.local(I32)
  c.i32(0).set(j)
  c.loop()
  c.get(j).i32(4).i32Mul().get(j).i32(8).i32Mul().f64Load(SUMS).f32DemoteF64().f32Store(DATA)
  c.get(j).i32(1).i32Add().tee(j).get(0).i32LtU().brIf(0)
  c.end()
  return c
}

export interface ReduceScan {
  /** 1 when every element of x is finite, else 0 (x not empty). */
  allFinite(x: Float32Array): number
  /** out[i] = 1 where x[i] is finite, else 0. */
  flags(x: Float32Array, out: Float32Array): void
  /** The reference's argmin of a non-empty vector. */
  argmin(x: Float32Array): number
  /** out[j] = the sum of a[i * cols + j] over i < rows, as the generated loop adds it (rows, cols >= 1; cols <= MAX_COLS). */
  columnSums(a: Float32Array, rows: number, cols: number, out: Float32Array): void
}

type Exports = {
  all(b: number): void
  flags(b: number): void
  least(b: number): void
  findEq(b: number): void
  findNaN(b: number): void
  cols(cols: number, rows: number): void
  colsOut(cols: number): void
}

/** The scans, their module compiled on first use (one unshared memory: they run on the calling thread). */
export function reduceScan(): ReduceScan {
  let inst: { ex: Exports; f32: Float32Array; f64: Float64Array; i32: Int32Array } | undefined
  const get = () => {
    if (inst) return inst
    const pages = Math.ceil((SUMS + 8 * MAX_COLS) / 65536)
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages })
    const ex = new WebAssembly.Instance(moduleOf(pages), { env: { memory } }).exports as unknown as Exports
    return (inst = { ex, f32: new Float32Array(memory.buffer), f64: new Float64Array(memory.buffer), i32: new Int32Array(memory.buffer) })
  }
  /** Copies x[lo, lo + len) in, padded with `pad` to 16 floats; returns the end offset in bytes. */
  const stage = (f32: Float32Array, x: Float32Array, lo: number, len: number, pad: number): number => {
    const padded = Math.ceil(len / 16) * 16
    f32.set(x.subarray(lo, lo + len), DATA / 4)
    if (padded > len) f32.fill(pad, DATA / 4 + len, DATA / 4 + padded)
    return DATA + 4 * padded
  }
  return {
    allFinite(x) {
      const { ex, f32 } = get()
      for (let lo = 0; lo < x.length; lo += CHUNK) {
        ex.all(stage(f32, x, lo, Math.min(CHUNK, x.length - lo), 0))
        // -0 === 0: a sum of signed zeros is still "all finite"
        if (f32[0] !== 0 || f32[1] !== 0 || f32[2] !== 0 || f32[3] !== 0) return 0
      }
      return 1
    },
    flags(x, out) {
      const { ex, f32 } = get()
      for (let lo = 0; lo < x.length; lo += CHUNK) {
        const len = Math.min(CHUNK, x.length - lo)
        ex.flags(stage(f32, x, lo, len, 0))
        out.set(f32.subarray(DATA / 4, DATA / 4 + len), lo)
      }
    },
    argmin(x) {
      const { ex, f32, i32 } = get()
      // the least value (NaN if there is one); padding with +Inf never wins over an element
      let m = Infinity
      for (let lo = 0; lo < x.length; lo += CHUNK) {
        ex.least(stage(f32, x, lo, Math.min(CHUNK, x.length - lo), Infinity))
        for (let l = 0; l < 4; l++) {
          const v = f32[l]!
          if (v !== v) m = NaN
          else if (v < m) m = v
        }
        if (m !== m) break
      }
      const nan = m !== m
      // its first position: the first chunk, vector, then lane that holds it
      for (let lo = 0; lo < x.length; lo += CHUNK) {
        const len = Math.min(CHUNK, x.length - lo)
        // a single chunk is still in memory from the first pass
        const bytes = x.length <= CHUNK ? DATA + 4 * Math.ceil(len / 16) * 16 : stage(f32, x, lo, len, Infinity)
        f32.fill(m, 0, 4)
        if (nan) ex.findNaN(bytes)
        else ex.findEq(bytes)
        const at = i32[4]!
        if (at < bytes) {
          const i0 = (at - DATA) / 4
          for (let l = 0; l < 4; l++) {
            const v = f32[DATA / 4 + i0 + l]!
            if (nan ? v !== v : v === m) return lo + i0 + l
          }
        }
      }
      // unreachable: the least value is an element
      return -1
    },
    columnSums(a, rows, cols, out) {
      const { ex, f32, f64 } = get()
      f64.fill(0, SUMS / 8, SUMS / 8 + cols)
      const per = Math.floor(CHUNK / cols)
      for (let r0 = 0; r0 < rows; r0 += per) {
        const n = Math.min(per, rows - r0)
        f32.set(a.subarray(r0 * cols, (r0 + n) * cols), DATA / 4)
        ex.cols(cols, n)
      }
      ex.colsOut(cols)
      out.set(f32.subarray(DATA / 4, DATA / 4 + cols))
    },
  }
}
