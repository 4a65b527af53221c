import { describe, expect, test } from 'vitest'
import { simdMathModule } from '../src/wasm/simd-math.js'

/**
 * The float32x4 exp and log of the WebAssembly row chains against fround(Math.exp/log): every
 * 61st float32 bit pattern of the range (about 35 million values for log, 17 million for exp,
 * subnormals included), plus the special values. The contract is the backend's
 * transcendentalRtol (2^-23 relative), which one float32 ulp always meets.
 */
const PAGES = 1024 // 64 MiB
const LEN = (PAGES * 65536) / 4

function mapper(name: 'exp' | 'log'): (xs: Float32Array) => Float32Array {
  const memory = new WebAssembly.Memory({ initial: PAGES, maximum: PAGES, shared: true })
  const run = new WebAssembly.Instance(simdMathModule(PAGES), { env: { memory } }).exports[name] as (len: number) => void
  const mem = new Float32Array(memory.buffer)
  return (xs) => {
    const out = new Float32Array(xs.length)
    for (let lo = 0; lo < xs.length; lo += LEN) {
      const part = xs.subarray(lo, Math.min(xs.length, lo + LEN))
      mem.set(part)
      run(Math.ceil(part.length / 4) * 4)
      out.set(mem.subarray(0, part.length), lo)
    }
    return out
  }
}

/** Float32 values whose bit patterns run from `lo` to `hi` (as int32, both of one sign) by `step`. */
function patterns(lo: number, hi: number, step: number): Float32Array {
  const n = Math.floor((hi - lo) / step) + 1
  const bits = new Int32Array(n)
  for (let i = 0; i < n; i++) bits[i] = lo + i * step
  return new Float32Array(bits.buffer)
}

const bitsOf = (x: number) => new Int32Array(new Float32Array([x]).buffer)[0]!

/** Largest distance in ulps (ordered bit patterns of one sign) and largest relative error against the float64 function. */
function errors(xs: Float32Array, got: Float32Array, f: (x: number) => number): { ulps: number; rel: number; worst: number } {
  const gi = new Int32Array(got.buffer, got.byteOffset, got.length)
  const want = new Float32Array(xs.length)
  for (let i = 0; i < xs.length; i++) want[i] = f(xs[i]!)
  const wi = new Int32Array(want.buffer)
  let ulps = 0, rel = 0, worst = NaN
  for (let i = 0; i < xs.length; i++) {
    const w = want[i]!, g = got[i]!
    if (Object.is(w, g)) continue
    if (!Number.isFinite(w) || !Number.isFinite(g) || Math.sign(w) !== Math.sign(g)) return { ulps: Infinity, rel: Infinity, worst: xs[i]! }
    const d = Math.abs(gi[i]! - wi[i]!)
    if (d > ulps) {
      ulps = d
      worst = xs[i]!
    }
    const exact = f(xs[i]!)
    // relative error where the result is a normal float32 (a subnormal's is that of its grid)
    if (Math.abs(exact) >= 2 ** -126) rel = Math.max(rel, Math.abs(g - exact) / Math.abs(exact))
  }
  return { ulps, rel, worst }
}

describe('float32x4 exp and log (WebAssembly row chains)', () => {
  test('exp: at most one ulp from fround(Math.exp) from -104 to 89, relative error within 2^-23', () => {
    const exp = mapper('exp')
    for (const [lo, hi] of [[bitsOf(0), bitsOf(89)], [bitsOf(-0), bitsOf(-104)]] as const) {
      const xs = patterns(lo, hi, 61)
      const e = errors(xs, exp(xs), (x) => Math.exp(x))
      expect(e.ulps, `worst at ${e.worst}`).toBeLessThanOrEqual(1)
      expect(e.rel).toBeLessThanOrEqual(2 ** -23)
    }
  })

  test('log: at most one ulp from fround(Math.log) over every positive float32, subnormals included', () => {
    const log = mapper('log')
    const xs = patterns(1, bitsOf(3.4028234663852886e38), 61)
    const e = errors(xs, log(xs), (x) => Math.log(x))
    expect(e.ulps, `worst at ${e.worst}`).toBeLessThanOrEqual(1)
    expect(e.rel).toBeLessThanOrEqual(2 ** -23)
  })

  test('special values as the reference: infinities, zeros, NaN, overflow and underflow', () => {
    const exp = mapper('exp'), log = mapper('log')
    const xs = new Float32Array([-Infinity, Infinity, NaN, 0, -0, 88.72283935546875, 88.72284698486328, 200, -103.97207641601562, -103.9720916748047, -200, -87.5, 1e-30])
    const got = exp(xs)
    xs.forEach((x, i) => expect(Object.is(got[i], Math.fround(Math.exp(x))) || Math.abs(got[i]! - Math.exp(x)) <= 2 ** -149 || (Math.abs(got[i]! - Math.exp(x)) <= 2 ** -23 * Math.exp(x)), `exp(${x}) = ${got[i]}`).toBe(true))
    expect(Array.from(got.subarray(0, 5))).toEqual([0, Infinity, NaN, 1, 1])
    // NaN of either sign (x86's default NaN, from -Inf - -Inf, has the sign bit set)
    const nans = new Float32Array(new Int32Array([0x7fc00000, 0xffc00000 | 0, 0x7f800001, 0xff800001 | 0]).buffer)
    expect(Array.from(exp(nans)).every(Number.isNaN)).toBe(true)
    expect(Array.from(log(nans)).every(Number.isNaN)).toBe(true)
    const ls = new Float32Array([0, -0, -1, -Infinity, Infinity, NaN, 1, 1.401298464324817e-45, 1.1754942106924411e-38, 1.1754943508222875e-38, 3.4028234663852886e38])
    const lg = log(ls)
    expect(Array.from(lg.subarray(0, 7))).toEqual([-Infinity, -Infinity, NaN, NaN, Infinity, NaN, 0])
    ls.subarray(7).forEach((x, i) => expect(Math.abs(lg[i + 7]! - Math.log(x)) / Math.abs(Math.log(x))).toBeLessThanOrEqual(2 ** -23))
  })
})
