import { Code, F32, I32, V128 } from './wasm/asm.js'

/**
 * Scaling to int16 for the screening kernel (nearest-screen.ts), in WebAssembly: rows on the
 * thread that screens them, the codebook's statistics once per call and each column chunk's panel
 * as the screening kernel reaches it. Every scale is a power of two, so x
 * times its inverse is exact and rounding to the nearest integer moves a value by at most half
 * a scale step, which is what the bounds assume.
 */

const U24 = 2 ** -24
/**
 * 1.5 * 2^23: y + ROUNDER, for |y| < 2^22, is rounded to an integer (ties to even, as
 * f32x4.nearest) and its bits minus ROUNDER's are that integer: two instructions, where
 * nearest then i32x4.trunc_sat_f32x4_s take about nine on x86 (trunc_sat's NaN and overflow cases).
 */
const ROUNDER = 1.5 * 2 ** 23
const ROUNDER_BITS = 0x4b400000

/** The f32x4 on the stack (each lane's magnitude below 2^22) rounded to the nearest integers, as i32x4. */
function roundToI32x4(c: Code): Code {
  return c.vConstF32([ROUNDER, ROUNDER, ROUNDER, ROUNDER]).f32x4Add().vConstI32([ROUNDER_BITS, ROUNDER_BITS, ROUNDER_BITS, ROUNDER_BITS]).i32x4Sub()
}
/** Values outside [2^-40, 2^40] in magnitude (or not finite) are not scaled: float32 throughout. */
export const MAX_ABS = 2 ** 40
export const MIN_ABS = 2 ** -40

/**
 * Pairs of int16 per row, and the codebook's largest integer magnitude: 4x what would keep k
 * products of equal magnitudes within int32. The rows' largest magnitude is then set per call
 * from the codebook's actual sums (scaleCodebook), which leave more room than equal magnitudes.
 */
export function screenShape(k: number): { readonly k2: number; readonly qc: number } {
  const k2 = Math.ceil(k / 2)
  return { k2, qc: Math.min(32767, 4 * Math.floor(Math.sqrt((2 ** 31 - 1) / (2 * k2)))) }
}

/**
 * Float32 values at `info` (byte address): the codebook's scale, its largest |value|, the largest
 * column sum of |values| (an upper bound), 1 / scale, the rows' largest integer magnitude qx,
 * 2^(1 - floor(log2 qx)), and a bound on |integer dot product| (qx times the largest column sum
 * of |integers|).
 */
export const INFO_BYTES = 28

/**
 * `scaleRows(rows, a, qa)`: rows of k float32 at byte address a into int16 pairs at qa (k2 per
 * row), each row's scale times the codebook's at qa + chunk * k2 * 4 and its bound on the dot
 * products chunk * 4 bytes after (NaN for a row that cannot be scaled: it is then computed in
 * float32 whole). The bound: operands' rounding, the float32 kernel's own rounding of a k-term
 * sum (gamma_k times the sum of |products|), this kernel's conversion of the integer sum, and
 * room for rounding dot -/+ bound; the float32 sums and products it is computed with are
 * covered by a relative margin of 1e-3.
 */
export function scaleRowsCode(k: number, chunk: number, info: number): Code {
  const { k2 } = screenShape(k)
  const c = new Code(3)
  const [rows, aPtr, qa] = [0, 1, 2]
  const r = c.local(I32), p = c.local(I32), pEnd = c.local(I32), o = c.local(I32), sp = c.local(I32)
  const maxv = c.local(V128), sumv = c.local(V128), v = c.local(V128), inv = c.local(V128)
  const maxA = c.local(F32), sumA = c.local(F32), sx = c.local(F32), s = c.local(F32), e = c.local(F32)
  const k4 = k - (k % 4), k8 = k - (k % 8)
  const gamma = (k * U24) / (1 - k * U24)
  c.get(qa).i32(chunk * k2 * 4).i32Add().set(sp)
  c.get(aPtr).set(p)
  c.get(qa).set(o)
  c.i32(0).set(r)
  c.loop() // rows
  // largest |x| and the sum of |x| (NaN if any is NaN: pmax, one instruction where max takes
  // about eight on x86, may skip a NaN, and the sum is checked below)
  c.vConstF32([0, 0, 0, 0]).set(maxv)
  c.vConstF32([0, 0, 0, 0]).set(sumv)
  if (k4 > 0) {
    c.get(p).i32(k4 * 4).i32Add().set(pEnd)
    c.loop()
    c.get(p).vLoad(0).f32x4Abs().set(v)
    c.get(maxv).get(v).f32x4Pmax().set(maxv)
    c.get(sumv).get(v).f32x4Add().set(sumv)
    c.get(p).i32(16).i32Add().tee(p).get(pEnd).i32LtU().brIf(0)
    c.end()
    c.get(p).i32(-k4 * 4).i32Add().set(p)
  }
  c.get(maxv).f32x4ExtractLane(0)
  for (let l = 1; l < 4; l++) c.get(maxv).f32x4ExtractLane(l).f32Max()
  for (let i = k4; i < k; i++) c.get(p).f32Load(i * 4).f32Abs().f32Max()
  c.set(maxA)
  c.get(sumv).f32x4ExtractLane(0)
  for (let l = 1; l < 4; l++) c.get(sumv).f32x4ExtractLane(l).f32Add()
  for (let i = k4; i < k; i++) c.get(p).f32Load(i * 4).f32Abs().f32Add()
  // a float32 sum of k terms is within gamma_k of the exact one
  c.f32(1 + 2 * k * U24).f32Mul().set(sumA)
  c.block()
  c.block()
  // not scalable (NaN fails every comparison): scale 0, bound NaN
  c.get(maxA).f32(MAX_ABS).f32Le().i32Eqz().brIf(0)
  c.get(sumA).get(sumA).f32Ne().brIf(0)
  c.get(maxA).f32(0).f32Eq().get(maxA).f32(MIN_ABS).f32Ge().i32Or().i32Eqz().brIf(0)
  // sx: the least power of two with maxA / sx <= qx (1 for a zero row): 2^(E + 1 - qbits) for
  // 2^E <= maxA < 2^(E+1) and 2^qbits <= qx < 2^(qbits+1), or half of it
  c.f32(1)
  c.get(maxA).i32ReinterpretF32().i32(0x7f800000).i32And().f32ReinterpretI32().i32(info).f32Load(20).f32Mul().tee(sx)
  c.get(maxA).f32(0).f32Eq().select().set(sx)
  c.get(sx).f32(0.5).f32Mul().get(sx).get(maxA).get(sx).f32(0.5).f32Mul().i32(info).f32Load(16).f32Mul().f32Le().select().set(sx)
  c.f32(1).get(sx).f32Div().f32x4Splat().set(inv)
  // x / sx rounded to the nearest integer, in int16 pairs
  // |x / sx| <= qx <= 32767: within roundToI32x4's range
  const quant = (off: number) => roundToI32x4(c.get(p).vLoad(off).get(inv).f32x4Mul())
  for (let i = 0; i < k8; i += 8) {
    c.get(o)
    quant(i * 4)
    quant(i * 4 + 16)
    c.i16x8NarrowI32x4S().vStore(i * 2)
  }
  if (k4 > k8) {
    c.get(o)
    quant(k8 * 4)
    quant(k8 * 4)
    c.i16x8NarrowI32x4S().vStore64Lane(k8 * 2, 0)
  }
  for (let i = k4; i < k; i++) c.get(o).get(p).f32Load(i * 4).get(inv).f32x4ExtractLane(0).f32Mul().f32Nearest().i32TruncSatF32S().i32Store16(i * 2)
  if (k % 2 === 1) c.get(o).i32(0).i32Store16(k * 2)
  // s = sx * sc (exact: powers of two); the bound e
  c.get(sx).i32(info).f32Load(0).f32Mul().set(s)
  c.i32(info).f32Load(0).f32(0.5).f32Mul().get(sumA).f32Mul()
  c.get(sx).f32(0.5).f32Mul().i32(info).f32Load(8).f32Mul().f32Add()
  c.get(s).f32(k2 * 0.5).f32Mul().f32Add()
  c.get(maxA).i32(info).f32Load(8).f32Mul().get(sumA).i32(info).f32Load(4).f32Mul().f32Min().f32(gamma).f32Mul().f32Add()
  c.get(s).i32(info).f32Load(24).f32Mul().f32(U24).f32Mul().f32Add()
  c.f32(1.001).f32Mul().set(e)
  c.get(s).i32(info).f32Load(24).f32Mul().get(e).f32Add().f32(4 * U24).f32Mul().get(e).f32Add().f32(1.001).f32Mul().set(e)
  c.get(sp).get(s).f32Store(0)
  c.get(sp).get(e).f32Store(chunk * 4)
  c.br(1)
  c.end()
  c.get(sp).f32(0).f32Store(0)
  c.get(sp).f32(NaN).f32Store(chunk * 4)
  c.end()
  c.get(p).i32(k * 4).i32Add().set(p)
  c.get(o).i32(k2 * 4).i32Add().set(o)
  c.get(sp).i32(4).i32Add().set(sp)
  c.get(r).i32(1).i32Add().tee(r).get(rows).i32LtU().brIf(0)
  c.end()
  return c
}

/**
 * `codebookStats(out)`: over the float32 panels [npad/cw][k][cw] at 0, the per-lane largest |value|
 * as 4 floats at out, then each column's float32 sum of |values| (npad floats; NaN where the
 * column has a NaN, which the largest value, taken with pmax, may skip).
 */
export function codebookStatsCode(k: number, npad: number, cw: number): Code {
  const c = new Code(1)
  const out = 0
  const p = c.local(I32), pc = c.local(I32), col = c.local(I32), maxv = c.local(V128), v = c.local(V128)
  const V = cw / 4
  const sums = Array.from({ length: V }, () => c.local(V128))
  c.vConstF32([0, 0, 0, 0]).set(maxv)
  c.i32(0).set(pc)
  c.get(out).i32(16).i32Add().set(col)
  c.loop() // panels
  for (const s of sums) c.vConstF32([0, 0, 0, 0]).set(s)
  c.get(pc).set(p)
  c.loop() // k rows of the panel
  for (let j = 0; j < V; j++) {
    c.get(p).vLoad(j * 16).f32x4Abs().set(v)
    c.get(maxv).get(v).f32x4Pmax().set(maxv)
    c.get(sums[j]!).get(v).f32x4Add().set(sums[j]!)
  }
  c.get(p).i32(cw * 4).i32Add().tee(p).get(pc).i32(k * cw * 4).i32Add().i32LtU().brIf(0)
  c.end()
  for (let j = 0; j < V; j++) c.get(col).get(sums[j]!).vStore(j * 16)
  c.get(col).i32(cw * 4).i32Add().set(col)
  c.get(pc).i32(k * cw * 4).i32Add().tee(pc).i32(npad * k * 4).i32LtU().brIf(0)
  c.end()
  c.get(out).get(maxv).vStore(0)
  return c
}

/**
 * `panelScale(src, dst)`: one float32 panel [k][cw] at src times the codebook's 1 / scale (the
 * float32 at info + 12), rounded, into an int16 panel [k2][cw][2] at dst (an odd k's last pair
 * has a zero second element). The screening kernel scales each column chunk's panel as it
 * reaches it, into a scratch of its own that stays in L1: no int16 copy of the codebook is kept.
 */
export function panelScaleCode(k: number, cw: number, info: number): Code {
  const { k2 } = screenShape(k)
  const c = new Code(2)
  const [src, dst] = [0, 1]
  const t = c.local(I32), inv = c.local(V128), hi = c.local(V128)
  const V = cw / 4
  // |value / sc| <= qc <= 32767: within roundToI32x4's range
  const quant = (off: number) => roundToI32x4(c.get(src).vLoad(off).get(inv).f32x4Mul())
  c.i32(info).vLoad32Splat(12).set(inv)
  c.i32(0).set(t)
  c.loop() // pairs of panel rows
  for (let j = 0; j < V; j++) {
    if (k % 2 === 0) quant(cw * 4 + j * 16).i32(16).i32x4Shl().set(hi)
    else {
      // an odd k's last pair is one row: its high halves stay zero
      c.vConstI32([0, 0, 0, 0]).set(hi)
      c.block()
      c.get(t).i32(k2 - 1).i32LtU().i32Eqz().brIf(0)
      quant(cw * 4 + j * 16).i32(16).i32x4Shl().set(hi)
      c.end()
    }
    c.get(dst)
    quant(j * 16).vConstI32([0xffff, 0xffff, 0xffff, 0xffff]).vAnd().get(hi).vOr()
    c.vStore(j * 16)
  }
  c.get(dst).i32(cw * 4).i32Add().set(dst)
  c.get(src).i32(2 * cw * 4).i32Add().set(src)
  c.get(t).i32(1).i32Add().tee(t).i32(k2).i32LtU().brIf(0)
  c.end()
  return c
}

/** The least power of two at or above t (t > 0, finite). */
function pow2AtLeast(t: number): number {
  let p = 2 ** Math.ceil(Math.log2(t))
  while (p < t) p *= 2
  return p
}

/**
 * Writes the codebook's scale and what the row scaling and panel scaling read (`info`, INFO_BYTES)
 * from its float32 panels (`stats` is the module's codebookStats, `statsAt` npad + 4 floats of
 * scratch). False when a value is outside the scalable range: that call runs in float32 throughout.
 */
export function scaleCodebook(mem: ArrayBuffer, k: number, npad: number, statsAt: number, info: number, stats: (out: number) => void): boolean {
  stats(statsAt)
  const f = new Float32Array(mem, statsAt, 4 + npad)
  const maxB = Math.max(f[0]!, f[1]!, f[2]!, f[3]!)
  if (!(maxB <= MAX_ABS) || (maxB > 0 && maxB < MIN_ABS)) return false
  let sum = 0
  for (let j = 4; j < 4 + npad; j++) {
    const v = f[j]!
    if (v !== v) return false
    sum = Math.max(sum, v)
  }
  // a float32 sum of k terms is within gamma_k of the exact one
  const colSum = Math.fround(sum * (1 + 4 * k * U24))
  const sc = maxB === 0 ? 1 : pow2AtLeast(maxB / screenShape(k).qc)
  // each integer is within 1/2 of |value| / sc: a bound on any column's sum of |integers|, and
  // the rows' largest integer magnitude that keeps every integer dot product within int32
  const intSum = Math.ceil(colSum / sc + k / 2)
  const qx = Math.max(1, Math.min(32767, Math.floor((2 ** 31 - 1) / intSum)))
  const w = new Float32Array(mem, info, 7)
  w[0] = sc
  w[1] = maxB
  w[2] = colSum
  w[3] = 1 / sc
  w[4] = qx
  w[5] = 2 ** (1 - Math.floor(Math.log2(qx)))
  // rounded up to a float32
  w[6] = qx * intSum * (1 + 2 ** -20)
  return true
}
