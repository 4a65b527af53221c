import { V128 } from './asm.js'
import type { ElemCode } from './elem-code.js'

/**
 * tanh of four float32 lanes, evaluated in float64 lanes and rounded once to float32: accurate to
 * ~1e-12 relative before that rounding, so the result is within one float32 ulp of
 * `fround(Math.tanh(x))` and equals it except where the exact value lies within ~1e-12 of a
 * float32 rounding midpoint (one of 3.3 million random arguments in [-5, 5]; the test bounds the
 * rate), within the backend's transcendentalRtol = 2^-23.
 *
 * tanh(|x|) = e / (e + 2) with e = expm1(2|x|): 2|x| = k ln2 + r (|r| <= ln2/2, k found with the
 * 1.5 * 2^52 shifter, whose low bits then hold k + 1023, the exponent of 2^k), expm1(r) by its
 * degree-10 Taylor polynomial (remainder below 1e-12 relative; no tables: WebAssembly SIMD has no
 * gather), and e = 2^k expm1(r) + (2^k - 1), which never cancels (k = 0 gives expm1(r) itself,
 * so small arguments keep their relative accuracy). The sign is copied from x afterwards, so -0
 * stays -0. 2|x| is clamped to 18.2 (tanh(9.1) = 1 - 2.5e-8 already rounds to float32 1, as every
 * larger argument's does; +-Inf give +-1) and a NaN passes through.
 */

const TWO_MAX = 18.2
const DEGREE = 10
/** 1.5 * 2^52 + 1023: adding it rounds to an integer (ties to even) held in the low mantissa bits, biased by 1023. */
const SHIFTER = 1.5 * 2 ** 52 + 1023

/** Bytes that move float32 lanes 2-3 of a vector to lanes 0-1. */
const HIGH = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]
/** Lanes 0-1 of the first vector, then lanes 0-1 of the second. */
const JOIN = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]

const splat = (x: number): [number, number] => [x, x]

/** Scratch locals of emitTanh (make once per function body). */
export interface TanhScratch {
  readonly v: readonly number[]
  readonly q: readonly number[]
}

export function tanhScratch(c: ElemCode): TanhScratch {
  return { v: Array.from({ length: 7 }, () => c.local(V128)), q: Array.from({ length: 3 }, () => c.local(V128)) }
}

/** Replaces float32x4 local `x` by tanh(x). */
export function emitTanh(c: ElemCode, x: number, s: TanhScratch): void {
  const [a0, a1, r0, r1, k0, k1, t0] = s.v as [number, number, number, number, number, number, number]
  const a = [a0, a1], r = [r0, r1], k = [k0, k1]
  // |x| of lanes 0-1 and 2-3 as float64 (exact), doubled and clamped (pmin keeps a NaN: its first operand)
  c.get(x).f64x2PromoteLow().set(a0)
  c.get(x).get(x).vShuffle(HIGH).f64x2PromoteLow().set(a1)
  for (const u of [0, 1]) c.get(a[u]!).f64x2Abs().tee(a[u]!).get(a[u]!).f64x2Add().vConstF64(splat(TWO_MAX)).f64x2Pmin().set(a[u]!)
  // k = round(2|x| / ln 2) in [0, 26], its float in r for now; r = 2|x| - k ln2 (error below 2e-15)
  for (const u of [0, 1]) c.get(a[u]!).vConstF64(splat(1 / Math.LN2)).f64x2Mul().vConstF64(splat(SHIFTER)).f64x2Add().tee(k[u]!).vConstF64(splat(SHIFTER)).f64x2Sub().set(r[u]!)
  for (const u of [0, 1]) c.get(a[u]!).get(r[u]!).vConstF64(splat(Math.LN2)).f64x2Mul().f64x2Sub().set(r[u]!)
  // expm1(r) = r q(r), q(r) = 1 + r/2 + r^2/6 + ... + r^9/10!, by Estrin's scheme (a dependency
  // chain of 4 multiply-adds instead of Horner's 9: the loop is latency-bound otherwise)
  const coef: number[] = []
  let fact = 1
  for (let i = 1; i <= DEGREE; i++) coef.push(1 / (fact *= i))
  const [q0, q1, q2] = s.q as [number, number, number]
  for (const u of [0, 1]) {
    const R = r[u]!, A = a[u]!, K = k[u]!
    // pairs c_i + c_{i+1} r for i = 0, 2, 4, 6, 8; r^2 in K's place is not possible (K holds the shifted sum), so in q2
    const lin = (i: number) => c.get(R).vConstF64(splat(coef[i + 1]!)).f64x2Mul().vConstF64(splat(coef[i]!)).f64x2Add()
    c.get(R).get(R).f64x2Mul().set(q2) // r^2
    lin(0); lin(2); c.get(q2).f64x2Mul().f64x2Add().set(A) // s0 = p01 + p23 r^2
    lin(4); lin(6); c.get(q2).f64x2Mul().f64x2Add().set(q0) // s1 = p45 + p67 r^2
    lin(8).set(q1) // s2 = p89
    c.get(q2).get(q2).f64x2Mul().set(q2) // r^4
    c.get(A).get(q0).get(q2).f64x2Mul().f64x2Add() // s0 + s1 r^4
    c.get(q1).get(q2).get(q2).f64x2Mul().f64x2Mul().f64x2Add().set(A) // + s2 r^8
    void K
  }
  // 2^k from the shifted sum's low bits; e = 2^k expm1(r) + (2^k - 1); tanh = e / (e + 2)
  for (const u of [0, 1]) c.get(k[u]!).i32(52).i64x2Shl().set(k[u]!)
  for (const u of [0, 1]) c.get(a[u]!).get(r[u]!).f64x2Mul().get(k[u]!).f64x2Mul().get(k[u]!).vConstF64(splat(1)).f64x2Sub().f64x2Add().set(a[u]!)
  for (const u of [0, 1]) c.get(a[u]!).get(a[u]!).vConstF64(splat(2)).f64x2Add().f64x2Div().f32x4DemoteF64x2Zero().set(a[u]!)
  // join the halves and copy x's sign bit onto the non-negative result
  c.get(a0).get(a1).vShuffle(JOIN).set(t0)
  c.get(t0).get(x).vConstI32([-0x80000000, -0x80000000, -0x80000000, -0x80000000]).vAnd().vOr().set(x)
}
