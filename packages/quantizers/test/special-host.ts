/** Double-precision references for FSP's special functions (erf and erfinv are not in Math). */

/** erf in double: the Taylor series below 2, erfc's continued fraction above (both well under 1e-12 here). */
export function erfHost(x: number): number {
  const a = Math.abs(x)
  if (a < 2) {
    let term = a, sum = a
    for (let n = 1; n < 60; n++) {
      term *= (-a * a) / n
      sum += term / (2 * n + 1)
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum
  }
  // erfc(a) = exp(-a^2) / sqrt(pi) / (a + (1/2) / (a + 1 / (a + (3/2) / (a + ...))))
  let f = a
  for (let k = 200; k >= 1; k--) f = a + k / 2 / f
  return Math.sign(x) * (1 - Math.exp(-a * a) / (Math.sqrt(Math.PI) * f))
}

/** erfinv in double by bisection on erfHost. */
export function erfinvHost(y: number): number {
  let lo = -6, hi = 6
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2
    if (erfHost(mid) < y) lo = mid
    else hi = mid
  }
  return (lo + hi) / 2
}
