import type { Tensor } from '@tessera/core'
import { where } from '@tessera/core'

/**
 * erf, erfinv, atan and tan are not IR primitives, so FSP's `normal` and `cauchy` CDFs are built
 * from the ones that are (exp, log, sqrt, div, ...), each accurate to float32's resolution (about
 * 1e-7): their inputs and outputs are float32 either way, as in the reference.
 */

/** Horner's rule: c[0] + c[1] x + c[2] x^2 + ... */
const poly = (x: Tensor, c: readonly number[]): Tensor => c.slice(0, -1).reduceRight((acc, k) => acc.mul(x).add(k), x.fullLike(c[c.length - 1]!))

/**
 * erf(x): below 1 in magnitude its Taylor series to x^21 (error below 1e-9, and no cancellation
 * near 0, so small inputs keep their relative accuracy); above, Abramowitz and Stegun 7.1.26
 * (absolute error below 1.5e-7), extended as an odd function.
 */
export function erf(x: Tensor): Tensor {
  const a = x.abs()
  const series = poly(x.square(), Array.from({ length: 11 }, (_, n) => ((-1) ** n * 2) / Math.sqrt(Math.PI) / (factorial(n) * (2 * n + 1)))).mul(x)
  const t = a.mul(0.3275911).add(1).recip()
  const tail = poly(t, [0, 0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429]).mul(a.square().neg().exp())
  return where(a.lt(1), series, x.sign().mul(tail.rsub(1)))
}

const factorial = (n: number): number => (n <= 1 ? 1 : n * factorial(n - 1))

/**
 * erfinv(y) on (-1, 1), Giles' single-precision approximation ("Approximating the erfinv
 * function", GPU Computing Gems, 2011): two polynomials in w = -log(1 - y^2).
 */
export function erfinv(y: Tensor): Tensor {
  const w = y.rsub(1).mul(y.add(1)).log().neg()
  const central = poly(w.sub(2.5), [1.50140941, 0.246640727, -0.00417768164, -0.00125372503, 0.00021858087, -4.39150654e-6, -3.5233877e-6, 3.43273939e-7, 2.81022636e-8])
  const tail = poly(w.sqrt().sub(3), [2.83297682, 1.00167406, 0.00943887047, -0.0076224613, 0.00573950773, -0.00367342844, 0.00134934322, 0.000100950558, -0.000200214257])
  return where(w.lt(5), central, tail).mul(y)
}

/** atan on |u| <= tan(pi/8): the odd Taylor series to u^15 (error below 2e-8). */
const atanSmall = (u: Tensor): Tensor => poly(u.square(), [1, -1 / 3, 1 / 5, -1 / 7, 1 / 9, -1 / 11, 1 / 13, -1 / 15]).mul(u)

/** atan(x): reduced to [0, 1] by atan(a) = pi/2 - atan(1/a), then to |u| <= tan(pi/8) by atan(r) = pi/4 + atan((r - 1)/(r + 1)). */
export function atan(x: Tensor): Tensor {
  const a = x.abs()
  const big = a.gt(1)
  const r = where(big, a.maximum(1).recip(), a)
  const shifted = r.gt(Math.SQRT2 - 1)
  const u = where(shifted, r.sub(1).div(r.add(1)), r)
  const base = atanSmall(u).add(where(shifted, Math.PI / 4, 0))
  return x.sign().mul(where(big, base.rsub(Math.PI / 2), base))
}

/** sin and cos on [0, pi/4] by their Taylor series (errors below 1e-12). */
const sinSmall = (b: Tensor): Tensor => poly(b.square(), [1, -1 / 6, 1 / 120, -1 / 5040, 1 / 362880, -1 / 39916800, 1 / 6227020800]).mul(b)
const cosSmall = (b: Tensor): Tensor => poly(b.square(), [1, -1 / 2, 1 / 24, -1 / 720, 1 / 40320, -1 / 3628800, 1 / 479001600])

/** pi/2 as a float32 head and the remainder: head - a is exact for a in [pi/4, pi/2] (Sterbenz), so pi/2 - a rounds once. */
const HALF_PI_HI = Math.fround(Math.PI / 2)
const HALF_PI_LO = Math.PI / 2 - HALF_PI_HI

/** tan(x) on (-pi/2, pi/2): sin/cos on [0, pi/4], and cot(pi/2 - a) above it, so the ratio keeps its relative accuracy near the poles. */
export function tan(x: Tensor): Tensor {
  const a = x.abs()
  const big = a.gt(Math.PI / 4)
  const b = where(big, a.rsub(HALF_PI_HI).add(HALF_PI_LO), a)
  const s = sinSmall(b), c = cosSmall(b)
  return x.sign().mul(where(big, c.div(s), s.div(c)))
}
