import { I32, V128, assemble } from './asm.js'
import { ChainCode } from './simd-ops.js'

/**
 * exp and log on float32x4 lanes in float32 arithmetic (Cody-Waite reduction and the Cephes
 * minimax polynomials), for generated row chains. Measured against `fround(Math.exp/log)` over
 * the whole float32 range (test/simd-math.test.ts): at most one float32 ulp off, a relative
 * error below 0.7 * 2^-23, within the backend's transcendentalRtol (2^-23). The float64 map of
 * mathmap.ts is more accurate (rarely an ulp off) but handles 2 lanes where this handles 4.
 *
 * Special values follow the reference: exp(-Inf) = +0, exp(+Inf) = +Inf, exp of a large
 * argument overflows to +Inf, of a small one underflows through the subnormals to +0;
 * log(+0) = log(-0) = -Inf, log(x < 0) = NaN, log(+Inf) = +Inf, log of a subnormal is finite;
 * NaN gives NaN.
 */

const splat4 = (x: number): number[] => [x, x, x, x]

/** Scratch locals the two functions need (make once per function body). */
export interface MathScratch {
  readonly a: number
  readonly b: number
  readonly k: number
}

export function mathScratch(c: ChainCode): MathScratch {
  return { a: c.local(V128), b: c.local(V128), k: c.local(V128) }
}

/** 1.5 * 2^23: adding it rounds a float32 below 2^22 in magnitude to an integer (ties to even), held in its low bits. */
const SHIFT = 12582912
const SHIFT_BITS = 0x4b400000

/**
 * Replaces float32x4 local `x` by exp(x). No lane ever makes a subnormal float: subnormal results
 * are built from integer bits (a float op that underflows costs a microcode assist, which slowed
 * softmax's many tiny exponentials; bench/README.md has the measurement).
 */
export function emitExp(c: ChainCode, x: number, s: MathScratch): void {
  const { a: r, b: y, k } = s
  // e^89 overflows float32 and e^-104 rounds to +0: clamping keeps both results (and NaN: pmin/pmax keep their first operand)
  c.get(x).vConstF32(splat4(89)).f32x4Pmin().vConstF32(splat4(-104)).f32x4Pmax().set(x)
  // k = round(x / ln 2) (as a float in y, as an integer in k); r = x - k ln2 with ln 2 split so that k * C1 is exact (|k| <= 150)
  c.get(x).vConstF32(splat4(1.4426950408889634)).f32x4Mul().vConstF32(splat4(SHIFT)).f32x4Add().set(k)
  c.get(k).vConstF32(splat4(SHIFT)).f32x4Sub().set(y)
  c.get(k).vConstI32(splat4(SHIFT_BITS)).i32x4Sub().set(k)
  c.get(x).get(y).vConstF32(splat4(0.693359375)).f32x4Mul().f32x4Sub()
  c.get(y).vConstF32(splat4(-2.12194440e-4)).f32x4Mul().f32x4Sub().set(r)
  // e^r = 1 + r + r^2 P(r), |r| <= ln2 / 2
  c.vConstF32(splat4(1.9875691500e-4)).get(r).f32x4Mul()
  for (const co of [1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1]) c.vConstF32(splat4(co)).f32x4Add().get(r).f32x4Mul()
  c.vConstF32(splat4(5.0000001201e-1)).f32x4Add().get(r).get(r).f32x4Mul().f32x4Mul().get(r).f32x4Add().vConstF32(splat4(1)).f32x4Add().set(y)
  // normal results (k >= -126): y * 2^(k >> 1) * 2^(k - (k >> 1)), both factors normal for k up
  // to 128, the first product exact, the second rounded once; other lanes take k = 0 here
  const normal = r
  c.get(k).vConstI32(splat4(-127)).i32x4GtS().set(x)
  c.get(k).get(x).vAnd().set(normal)
  c.get(y).get(normal).i32(1).i32x4ShrS().vConstI32(splat4(127)).i32x4Add().i32(23).i32x4Shl().f32x4Mul()
  c.get(normal).get(normal).i32(1).i32x4ShrS().i32x4Sub().vConstI32(splat4(127)).i32x4Add().i32(23).i32x4Shl().f32x4Mul().set(normal)
  // subnormal results (k <= -127): their bits are round(y * 2^(k + 149)), an integer below 2^23
  // that adding 2^23 rounds (ties to even) into the low bits; other lanes scale by 2^0 here
  c.get(k).vConstI32(splat4(149)).i32x4Add().get(x).vAndNot().vConstI32(splat4(127)).i32x4Add().i32(23).i32x4Shl()
  c.get(y).f32x4Mul().vConstF32(splat4(2 ** 23)).f32x4Add().vConstI32(splat4(0x4b000000)).i32x4Sub()
  c.set(y)
  c.get(normal).get(y).get(x).bitselect()
  // a NaN argument (either sign: x86's default NaN is negative, whose bits the subnormal path would misread)
  c.get(r).get(r).f32x4Ne().vOr().set(x)
}

/** Replaces float32x4 local `x` by log(x). */
export function emitLog(c: ChainCode, x: number, s: MathScratch): void {
  const { a: m, b: z, k: e } = s
  // subnormals (and zeros and negatives, fixed below) scaled by 2^23 so their exponent field is right
  const sub = z
  c.get(x).vConstF32(splat4(2 ** -126)).f32x4Lt().set(sub)
  c.get(x).vConstF32(splat4(2 ** 23)).f32x4Mul().get(x).get(sub).bitselect().set(m)
  // x = 2^(e+1) * f, f in [0.5, 1); e from the exponent bits (minus 23 for a scaled subnormal)
  c.get(m).i32(23).i32x4ShrU().vConstI32(splat4(126)).i32x4Sub().get(sub).vConstI32(splat4(-23)).vAnd().i32x4Add().set(e)
  c.get(m).vConstI32(splat4(0x007fffff)).vAnd().vConstI32(splat4(0x3f000000)).vOr().set(m)
  // f < sqrt(1/2): e - 1 and 2f - 1, else f - 1 (the comparison's all-ones lanes are -1)
  c.get(m).vConstF32(splat4(0.7071067811865476)).f32x4Lt().set(sub)
  c.get(e).get(sub).i32x4Add().f32x4ConvertI32x4S().set(e)
  c.get(m).get(m).get(sub).vAnd().f32x4Add().vConstF32(splat4(1)).f32x4Sub().set(m)
  c.get(m).get(m).f32x4Mul().set(z)
  c.vConstF32(splat4(7.0376836292e-2)).get(m).f32x4Mul()
  for (const co of [-1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1])
    c.vConstF32(splat4(co)).f32x4Add().get(m).f32x4Mul()
  c.vConstF32(splat4(3.3333331174e-1)).f32x4Add().get(m).f32x4Mul().get(z).f32x4Mul()
  c.get(e).vConstF32(splat4(-2.12194440e-4)).f32x4Mul().f32x4Add()
  c.get(z).vConstF32(splat4(0.5)).f32x4Mul().f32x4Sub()
  c.get(m).f32x4Add().get(e).vConstF32(splat4(0.693359375)).f32x4Mul().f32x4Add().set(m)
  // x < 0 and NaN: NaN; +-0: -Inf; +Inf: +Inf
  c.get(m).vConstF32(splat4(NaN)).get(x).vConstF32(splat4(0)).f32x4Ge().bitselect().set(m)
  c.vConstF32(splat4(-Infinity)).get(m).get(x).vConstF32(splat4(0)).f32x4Eq().bitselect().set(m)
  c.vConstF32(splat4(Infinity)).get(m).get(x).vConstF32(splat4(Infinity)).f32x4Eq().bitselect().set(x)
}

/**
 * A module for testing the two functions: `exp(len)` and `log(len)` map float32 values in place
 * at byte 0 of a memory of `pages` pages (len a multiple of 4).
 */
export function simdMathModule(pages: number): WebAssembly.Module {
  const fn = (f: typeof emitExp) => {
    const c = new ChainCode(1)
    const p = c.local(I32), x = c.local(V128), s = mathScratch(c)
    c.get(0).i32(4).i32Mul().set(0)
    c.block().loop()
    c.get(p).get(0).i32GeU().brIf(1)
    c.get(p).vLoad().set(x)
    f(c, x, s)
    c.get(p).get(x).vStore()
    c.get(p).i32(16).i32Add().set(p)
    c.br(0)
    c.end().end()
    return c
  }
  return new WebAssembly.Module(assemble(pages, [{ name: 'exp', code: fn(emitExp) }, { name: 'log', code: fn(emitLog) }]) as BufferSource)
}
