/**
 * exp and tanh in float64 arithmetic, accurate to a few parts in 1e15, for generated loops:
 * V8's Math.exp/Math.tanh are out-of-line calls costing 25-40 ns each, which dominates a fused
 * FSQ or softmax loop. Results are rounded to float32 by the caller, so they equal the
 * reference's `fround(Math.exp(x))` except when the exact value lies within ~1e-15 (relative)
 * of a float32 rounding midpoint, where they may differ by one float32 ulp. The backend's caps
 * say so (transcendentalRtol = 2^-23).
 */

/**
 * Everything below lives in one self-contained function (no reference to anything outside it),
 * so that worker threads running generated loops can rebuild the same helpers from its source
 * (`fastMathFactory.toString()`, see chain-runner.ts).
 */
export function fastMathFactory(): {
  fastTanh: (x: number) => number
  signOf: (x: number) => number
  TANH_TAB: Float64Array
  tanhConsts: { readonly TANH_MAX: number; readonly TANH_K: number; readonly SHIFTER: number; readonly INV_N_LN2: number; readonly N_LN2_HI: number; readonly N_LN2_LO: number }
  expF32: (x: number) => number
  makeLogF32: () => (x: number) => number
} {
  // ln 2 split so that k * LN2_HI is exact for |k| < 2^20
  const LN2_HI = 0.6931471803691238
  const LN2_LO = 1.9082149292705877e-10

  /** 2^k for k in [-1022, 1023]. */
  const POW2 = (() => {
    const t = new Float64Array(2046)
    for (let k = -1022; k <= 1023; k++) t[k + 1022] = 2 ** k
    return t
  })()

  /*
   * exp for generated float32 loops: a table-driven float64 evaluation (2^(j/32) table, degree-5
   * polynomial) accurate to a few parts in 1e15, rounded to float32 by the caller. It differs from
   * `fround(Math.exp(x))` only where the exact value lies that close to a float32 rounding
   * midpoint, by one float32 ulp (the caps' transcendentalRtol = 2^-23). Measured 2.5x faster than
   * V8's out-of-line Math.exp, which dominated softmax loops over 67M logits (a 13-term series
   * with Math.round, as fastTanh had before, was slower than Math.exp). `makeLogF32` below is the log
   * counterpart; each kernel gets its own, since it reads float bits through a scratch array.
   */

  /** Rounds a float64 of magnitude below 2^51 to an integer (half to even) by the 1.5 * 2^52 trick. */
  const SHIFTER = 6755399441055744
  const EXP_TAB = (() => {
    const t = new Float64Array(32)
    for (let j = 0; j < 32; j++) t[j] = 2 ** (j / 32)
    return t
  })()
  const N_LN2_HI = LN2_HI / 32
  const N_LN2_LO = LN2_LO / 32
  const INV_N_LN2 = 32 / Math.LN2

  /**
   * tanh(x) = expm1(2x) / (expm1(2x) + 2), with expm1 from a table of 2^(k/32): 2c = k ln2/32 + r
   * with |r| <= ln2/64, s = 2^(k/32), expm1(2c) = s expm1(r) - (1 - s) (degree-6 series for
   * expm1(r), truncation below 4e-16 relative, evaluated in Estrin form, which halves the
   * dependent multiply-adds of Horner's). When 2c is small, k = 0 and 1 - s = 0 exactly, so small
   * arguments keep full relative accuracy (and -0 gives -0: -0 - +0 is -0); for larger ones s - 1
   * is exact or at least 1 in size. The argument is clamped to ±TANH_MAX: tanh(9.1) = 1 - 2.5e-8
   * already rounds to float32 1, as every larger argument's tanh does, and a NaN passes through.
   * The clamp's branch is almost never taken, so it is cheaper than Math.min/Math.max, whose NaN
   * and signed-zero handling costs more. No call and no table
   * bounds to check beyond the clamp, so generated loops inline it as straight-line code
   * (Emitter.tanh in emit.ts writes the same operations; a test checks they agree bit for bit).
   */
  const TANH_MAX = 9.1
  /** Table index offset: |k| <= round(2 * 9.1 * 32 / ln2) = 840. */
  const TANH_K = 841
  const TANH_TAB = (() => {
    const t = new Float64Array(2 * TANH_K + 1)
    // the old two-table product (2^(j/32) times an exact power of two), so values are unchanged
    for (let k = -TANH_K; k <= TANH_K; k++) t[k + TANH_K] = EXP_TAB[k & 31]! * 2 ** (k >> 5)
    return t
  })()
  const tanhConsts = { TANH_MAX, TANH_K, SHIFTER, INV_N_LN2, N_LN2_HI, N_LN2_LO } as const

  function fastTanh(x: number): number {
    const c = Math.abs(x) <= TANH_MAX ? x : x > 0 ? TANH_MAX : x < 0 ? -TANH_MAX : x
    const y = 2 * c
    const kf = (y * INV_N_LN2 + SHIFTER) - SHIFTER
    const r = y - kf * N_LN2_HI - kf * N_LN2_LO
    const r2 = r * r
    const p = r * ((1 + r * 0.5) + r2 * ((1 / 6 + r * (1 / 24)) + r2 * (1 / 120 + r * (1 / 720))))
    const s = TANH_TAB[(kf | 0) + TANH_K]!
    const em1 = s * p - (1 - s)
    return em1 / (em1 + 2)
  }

  /**
   * ±1 with the sign bit of x (-0 and NaNs with the bit set give -1), read from its bits through
   * a scratch float64: no branch, where `x < 0 ? -1 : 1` or Math.sign would branch on data
   * (inline round half to even, Emitter.roundInline, gives a zero result x's sign by it, cheaper
   * than a test for a zero result). The scratch is written and read back at
   * once, so one per thread serves every loop.
   */
  const SIGN_F = new Float64Array(1)
  const SIGN_W = new Int32Array(SIGN_F.buffer)
  // the word holding the sign bit: the high one, index 1 on little-endian machines
  const SIGN_HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0
  function signOf(x: number): number {
    SIGN_F[0] = x
    return (SIGN_W[SIGN_HI]! >> 31) | 1
  }

  /** exp(x) to float64 accuracy ~1e-15 relative, for any float64 x whose float32 rounding matters. */
  function expF32(x: number): number {
    // fround(exp(x)) is +Infinity from x >= 88.73 and +0 below -103.98 (beyond the smallest subnormal)
    if (!(x > -104 && x < 89)) return x !== x ? x : x > 0 ? Infinity : 0
    const nf = (x * INV_N_LN2 + SHIFTER) - SHIFTER
    const n = nf | 0
    const r = x - nf * N_LN2_HI - nf * N_LN2_LO
    // |r| <= ln2/64: the degree-5 Taylor remainder r^6/720 is below 3e-15
    const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))))
    return EXP_TAB[n & 31]! * p * POW2[(n >> 5) + 1022]!
  }

  /** For the 128 intervals [1 + j/128, 1 + (j+1)/128): centre c, 1/c, log(c). */
  const LOG_C = new Float64Array(128)
  const LOG_INV = new Float64Array(128)
  const LOG_LOGC = new Float64Array(128)
  for (let j = 0; j < 128; j++) {
    const c = 1 + (j + 0.5) / 128
    LOG_C[j] = c
    LOG_INV[j] = 1 / c
    LOG_LOGC[j] = Math.log(c)
  }

  /**
   * A log for generated float32 loops: for a positive normal float32 x, its exponent and top 7
   * mantissa bits come from its bits (read through a float32 scratch owned by the returned
   * function, so each kernel gets its own), then log(c) from a table plus a degree-7 series in
   * u = (m - c)/c with |u| <= 1/257. Accurate to ~1e-15 relative (its float32 rounding differs from
   * `fround(Math.log(x))` by at most one ulp, near midpoints, as transcendentalRtol = 2^-23 says);
   * about 1.5x faster than Math.log here. Anything else (zero, negatives, NaN, infinities,
   * subnormals, values that are not float32) goes to Math.log.
   */
  function makeLogF32(): (x: number) => number {
    const scratch = new Float32Array(1)
    const bitsOf = new Int32Array(scratch.buffer)
    // the last argument and its log: a clamped log (log(max(p, eps)) in an entropy) mostly sees
    // the same argument again; ±0 compare equal and have the same log
    let lastX = NaN, lastY = NaN
    return (x: number): number => {
      if (x === lastX) return lastY
      lastX = x
      lastY = logOf(x)
      return lastY
    }
    function logOf(x: number): number {
      scratch[0] = x
      const bits = bitsOf[0]!
      const e = (bits >> 23) - 127
      if (!(x > 0 && x < Infinity) || e === -127 || scratch[0] !== x) return Math.log(x)
      const m = x * POW2[1022 - e]!
      const j = (bits >>> 16) & 127
      const u = (m - LOG_C[j]!) * LOG_INV[j]!
      const l = u - u * u * (0.5 - u * (1 / 3 - u * (0.25 - u * (0.2 - u * (1 / 6 - u * (1 / 7))))))
      return e * Math.LN2 + LOG_LOGC[j]! + l
    }
  }

  return { fastTanh, signOf, TANH_TAB, tanhConsts, expF32, makeLogF32 }
}

export const { fastTanh, signOf, TANH_TAB, tanhConsts, expF32, makeLogF32 } = fastMathFactory()
