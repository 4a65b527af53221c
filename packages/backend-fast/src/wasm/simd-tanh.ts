import { V128 } from './asm.js'
import type { ElemCode } from './elem-code.js'

/**
 * tanh of four float32 lanes in float32 arithmetic (the float64 evaluation it replaced handled two
 * lanes a vector), within one float32 ulp of `fround(Math.tanh(x))`: checked against it for every
 * float32 from 2^-13 to 9.2 (an exhaustive run, bench/README.md's float32 tanh section; the tests
 * sweep the range), so within the backend's transcendentalRtol = 2^-23. Several roundings make it
 * an ulp off for 1.8% of those arguments (the float64 evaluation: a few in 10^7).
 *
 * Both forms end in an operation whose large operand is exact, so the error of the rest shrinks
 * in proportion:
 * - |x| < SEAM: tanh(|x|) = |x| + |x| z Q(z), z = x^2, Q a minimax polynomial (no cancellation:
 *   the correction is at most about a quarter of the result, and tiny arguments give |x| itself).
 * - otherwise: tanh(|x|) = 1 - 2 / (e^2|x| + 1), with 2|x| = k ln2 + r (Cody-Waite, |r| <= ln2/2,
 *   k from the 1.5 * 2^23 shifter, whose low bits then give 2^-k) and
 *   (e^2|x| + 1) / 2^k = (1 + 2^-k) + expm1(r), expm1(r) = r + r^2 P(r) (the Cephes expf
 *   polynomial, as in simd-math.ts), so 2 / (e^2|x| + 1) = 2^(1-k) / that, one division.
 * 2|x| is clamped to 18.2 (tanh(9.1) = 1 - 2.5e-8 already rounds to float32 1, as every larger
 * argument's does; +-Inf give +-1); a NaN passes through both forms (the clamp is a pmin, which
 * keeps its first operand's NaN). The sign is copied from x afterwards, so -0 stays -0.
 */

/** Below it the odd polynomial, from it the exponential form (each within its error budget there; the tests check the seam). */
export const SEAM = 0.9
/** Q(z) = c0 + c1 z + ..., near-minimax for (tanh(x) - x) / x^3 on [0, SEAM^2] weighted by x^2 (the error it leaves relative to tanh(x)). */
const Q = [
  -0.33333322405815125, 0.13332977890968323, -0.05392930284142494, 0.021663542836904526, -0.008264543488621712,
  0.002582667162641883, -0.0004554597253445536,
]
/** expm1(r) = r + r^2 P(r) on |r| <= ln2 / 2: P's coefficients from r^0 up (Cephes expf). */
const P = [5.0000001201e-1, 1.6666665459e-1, 4.1665795894e-2, 8.3334519073e-3, 1.3981999507e-3, 1.9875691500e-4]
/** 1.5 * 2^23: adding it to a float32 in [0, 2^22) rounds it to an integer held in the low bits (ties to even). */
const SHIFT = 12582912
const SHIFT_BITS = 0x4b400000
/** ln 2 = LN2_HI + LN2_LO with LN2_HI of 9 bits, so k * LN2_HI is exact for k <= 2^15. */
const LN2_HI = 0.693359375
const LN2_LO = -2.12194440e-4
const TWO_MAX = 18.2

const splat = (x: number): number[] => [x, x, x, x]

/** Scratch locals of emitTanh (make once per function body). */
export interface TanhScratch {
  readonly v: readonly number[]
}

export function tanhScratch(c: ElemCode): TanhScratch {
  return { v: Array.from({ length: 6 }, () => c.local(V128)) }
}

/**
 * Leaves sum c_i u^i (6 or 7 coefficients) on the stack: (c0 + c1 u) + u^2 (c2 + c3 u) + u^4 ((c4 + c5 u) + u^2 c6),
 * each product and sum rounded in that order (the exhaustive check's emulation followed it); u2, u4 hold u^2, u^4.
 */
function estrin(c: ElemCode, co: readonly number[], u: number, u2: number, u4: number): void {
  const pair = (i: number) => c.get(u).vConstF32(splat(co[i + 1]!)).f32x4Mul().vConstF32(splat(co[i]!)).f32x4Add()
  pair(0)
  pair(2).get(u2).f32x4Mul().f32x4Add()
  pair(4)
  if (co.length === 7) c.get(u2).vConstF32(splat(co[6]!)).f32x4Mul().f32x4Add()
  c.get(u4).f32x4Mul().f32x4Add()
}

/** Replaces float32x4 local `x` by tanh(x). */
export function emitTanh(c: ElemCode, x: number, s: TanhScratch): void {
  const [a, z, small, t, k, r] = s.v as [number, number, number, number, number, number]
  c.get(x).f32x4Abs().tee(a).get(a).f32x4Mul().set(z)
  // small = a + ((Q(z) z) a), Q by Estrin's scheme (a chain of 6 ops, not Horner's 12: the loop
  // is latency-bound; 5-10% faster than Horner) with z^2 and z^4 in t and k for now
  c.get(z).get(z).f32x4Mul().tee(t).get(t).f32x4Mul().set(k)
  estrin(c, Q, z, t, k)
  c.get(z).f32x4Mul().get(a).f32x4Mul().get(a).f32x4Add().set(small)
  // t = min(2a, 18.2); k = round(t / ln2) in [0, 26] (its bits in k, its float in z); r = t - k ln2
  c.get(a).get(a).f32x4Add().vConstF32(splat(TWO_MAX)).f32x4Pmin().tee(t)
  c.vConstF32(splat(Math.LOG2E)).f32x4Mul().vConstF32(splat(SHIFT)).f32x4Add().tee(k)
  c.vConstF32(splat(SHIFT)).f32x4Sub().set(z)
  c.get(t).get(z).vConstF32(splat(LN2_HI)).f32x4Mul().f32x4Sub().get(z).vConstF32(splat(LN2_LO)).f32x4Mul().f32x4Sub().set(r)
  // t = expm1(r) = r + r^2 P(r), P by Estrin's scheme with r^2 in z and r^4 in t
  c.get(r).get(r).f32x4Mul().tee(z).get(z).f32x4Mul().set(t)
  estrin(c, P, r, z, t)
  c.get(z).f32x4Mul().get(r).f32x4Add().set(t)
  // k = 2^-k from the exponent bits (127 - k) << 23; tanh = 1 - (2^-k + 2^-k) / ((2^-k + 1) + expm1(r))
  c.vConstI32(splat(127 + SHIFT_BITS)).get(k).i32x4Sub().i32(23).i32x4Shl().set(k)
  c.vConstF32(splat(1)).get(k).get(k).f32x4Add()
  c.get(k).vConstF32(splat(1)).f32x4Add().get(t).f32x4Add().f32x4Div().f32x4Sub()
  // the form for |x|'s range, then x's sign bit onto the non-negative result
  c.get(small).get(a).vConstF32(splat(SEAM)).f32x4Ge().bitselect()
  c.get(x).vConstI32(splat(-0x80000000)).vAnd().vOr().set(x)
}
