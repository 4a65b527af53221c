import { fc, test } from '@fast-check/vitest'
import { describe, expect } from 'vitest'
import { expF32, fastTanh, makeLogF32, signOf } from '../src/fastmath.js'

const F = Math.fround

describe('expF32', () => {
  test.prop([fc.float({ min: -110, max: 95, noNaN: true })], { numRuns: 200 })(
    'rounded to float32 it is within one float32 ulp of fround(Math.exp(x))',
    (x) => {
      const want = F(Math.exp(x)), got = F(expF32(x))
      if (want === got) return
      // one ulp of want: the gap to the next float32 away from zero
      const ulp = F(want * (1 + 2 ** -23)) - want || 2 ** -149
      expect(Math.abs(got - want)).toBeLessThanOrEqual(ulp)
    },
  )

  test('special values and the float32 overflow/underflow edges equal the reference', () => {
    for (const x of [0, -0, 1, -1, NaN, Infinity, -Infinity, 88.72, 88.73, -103.9, -104, -1000, 1000, 1e-45]) {
      expect(F(expF32(x))).toBe(F(Math.exp(x)))
    }
  })

  test('a dense sweep of float32 inputs rarely differs, and never by more than one ulp', () => {
    let differ = 0
    for (let i = 0; i < 200000; i++) {
      const x = F(-100 + i * 0.00094)
      const want = F(Math.exp(x)), got = F(expF32(x))
      if (got !== want) {
        differ++
        expect(Math.abs(got - want) / want).toBeLessThanOrEqual(2 ** -23)
      }
    }
    expect(differ).toBeLessThan(20)
  })
})

describe('makeLogF32', () => {
  const log = makeLogF32()

  test('repeated arguments (the last-argument cache) give the same value as fresh ones, including ±0 and NaN', () => {
    const cached = makeLogF32()
    const seq = [1e-5, 1e-5, 0.25, 0.25, 1e-5, 0, -0, -0, 0, NaN, NaN, 3, -1, -1, 1e-5, 1e-40, 1e-40]
    for (const x of seq) {
      const fresh = makeLogF32()(x)
      expect(Object.is(cached(x), fresh), `x = ${x}`).toBe(true)
    }
  })

  test.prop([fc.float({ noNaN: true })], { numRuns: 200 })('on float32 inputs it is within one float32 ulp of fround(Math.log(x))', (x) => {
    const want = F(Math.log(x)), got = F(log(x))
    if (Object.is(want, got) || (want !== want && got !== got)) return
    expect(Math.abs(got - want) / Math.abs(want)).toBeLessThanOrEqual(2 ** -23)
  })

  test('special values, subnormals, and values near 1 equal the reference or differ by one ulp at most', () => {
    for (const x of [0, -0, 1, -1, NaN, Infinity, -Infinity, 1e-45, 1e-40, 1e-5, 0.1, 3.4e38, 1 / 3]) {
      expect(F(log(x))).toBe(F(Math.log(x)))
    }
    let differ = 0
    for (let i = -5000; i <= 5000; i++) {
      const x = F(1 + i * 2 ** -23)
      const want = F(Math.log(x)), got = F(log(x))
      if (got !== want) {
        differ++
        expect(Math.abs(got - want) / Math.abs(want)).toBeLessThanOrEqual(2 ** -23)
      }
    }
    expect(differ).toBeLessThan(10)
  })
})

describe('fastTanh', () => {
  test('special values, signed zeros, tiny and saturating arguments equal the reference', () => {
    for (const x of [0, -0, NaN, Infinity, -Infinity, 1e-45, -1e-45, 1e-30, -1e-8, 20, -20, 20.5, -25, 9.01, -9.01, 0.5493061]) {
      expect(Object.is(F(fastTanh(x)), F(Math.tanh(x))), `x = ${x}`).toBe(true)
    }
  })

  test('a dense sweep of float32 inputs over [-12, 12] and near 0 rarely differs, and never by more than one ulp', () => {
    let differ = 0
    const check = (x: number) => {
      const want = F(Math.tanh(x)), got = F(fastTanh(x))
      if (got !== want) {
        differ++
        expect(Math.abs(got - want) / Math.abs(want)).toBeLessThanOrEqual(2 ** -23)
      }
    }
    for (let i = 0; i < 200000; i++) check(F(-12 + i * 0.00012))
    for (let i = -20000; i <= 20000; i++) check(F(i * 1e-7))
    expect(differ).toBeLessThan(20)
  })

  test.prop([fc.float({ noNaN: true })], { numRuns: 200 })('on any float32 it is within one float32 ulp of fround(Math.tanh(x))', (x) => {
    const want = F(Math.tanh(x)), got = F(fastTanh(x))
    if (Object.is(want, got)) return
    expect(Math.abs(got - want) / Math.abs(want)).toBeLessThanOrEqual(2 ** -23)
  })
})

describe('signOf', () => {
  test('is -1 exactly where the sign bit is set (negative zero, negative NaN, -Infinity, subnormals), else 1', () => {
    const negNaN = new Float64Array(new BigUint64Array([0xfff8000000000000n]).buffer)[0]!
    const cases: [number, number][] = [[0, 1], [-0, -1], [1e-320, 1], [-1e-320, -1], [Infinity, 1], [-Infinity, -1], [NaN, 1], [negNaN, -1], [-0.3, -1], [2 ** 60, 1]]
    for (const [x, s] of cases) expect(signOf(x), `x = ${x}`).toBe(s)
  })
})
