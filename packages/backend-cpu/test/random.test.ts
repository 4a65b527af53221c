import { random, tensorOf } from '@tessera/core'
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { evalFn, values } from './helpers.js'

const draw = (key: readonly [number, number], n: number): Float32Array => {
  const [r] = evalFn([tensorOf(key, [2], 'int32')], (k) => k.builder.randomUniform(k, [n]))
  return r!.data as Float32Array
}

/** Chi-square statistic of counts against a uniform expectation. */
function chiSquare(counts: readonly number[], total: number): number {
  const e = total / counts.length
  return counts.reduce((acc, c) => acc + (c - e) ** 2 / e, 0)
}

// Upper 0.001 quantiles of the chi-square distribution.
const CHI2_P001_DF19 = 43.82
const CHI2_P001_DF24 = 51.18

const keyArb = fc.tuple(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }))

describe('random_uniform', () => {
  test('is reproducible per key and equals the host generator', () => {
    fc.assert(
      fc.property(keyArb, fc.integer({ min: 1, max: 64 }), (key, n) => {
        const a = draw(key, n), b = draw(key, n)
        expect(Array.from(a)).toEqual(Array.from(b))
        expect(Array.from(a)).toEqual(Array.from(random.uniformHost(key, n)))
      }),
      { numRuns: 100 },
    )
  })

  test('a longer draw extends a shorter one (element i depends only on key and i)', () => {
    const key = random.keyFromSeed(3)
    expect(Array.from(draw(key, 100)).slice(0, 37)).toEqual(Array.from(draw(key, 37)))
  })

  test('different keys give different draws, split keys included', () => {
    fc.assert(
      fc.property(keyArb, keyArb, (k1, k2) => {
        fc.pre(k1[0] !== k2[0] || k1[1] !== k2[1])
        const a = draw(k1, 16), b = draw(k2, 16)
        // 16 draws of 24 bits colliding everywhere would be a broken key mix
        expect(Array.from(a).filter((v, i) => v === b[i]).length).toBeLessThan(4)
      }),
      { numRuns: 100 },
    )
    const parts = random.splitKey(random.keyFromSeed(11), 8)
    const firsts = new Set(parts.map((k) => draw(k, 4).join(',')))
    expect(firsts.size).toBe(8)
  })

  test('values are multiples of 2^-24 in [0, 1)', () => {
    for (const v of draw(random.keyFromSeed(5), 4096)) {
      expect(v).toBeGreaterThanOrEqual(0)
      expect(v).toBeLessThan(1)
      expect(Number.isInteger(v * 2 ** 24)).toBe(true)
    }
  })

  test('is well distributed: chi-square over 20 bins below the p = 0.001 threshold, for several fixed keys', () => {
    const n = 20000
    for (const seed of [1, 2, 3, 1234, 99999]) {
      const counts = new Array<number>(20).fill(0)
      for (const v of draw(random.keyFromSeed(seed), n)) counts[Math.floor(v * 20)]!++
      const chi = chiSquare(counts, n)
      expect(chi, `seed ${seed}: chi2 = ${chi.toFixed(2)}`).toBeLessThan(CHI2_P001_DF19)
    }
  })

  test('consecutive draws are independent: chi-square of 5x5 pair bins', () => {
    const d = draw(random.keyFromSeed(7), 20000)
    const counts = new Array<number>(25).fill(0)
    for (let i = 0; i + 1 < d.length; i += 2) counts[Math.floor(d[i]! * 5) * 5 + Math.floor(d[i + 1]! * 5)]!++
    expect(chiSquare(counts, d.length / 2)).toBeLessThan(CHI2_P001_DF24)
  })

  test('streams of neighbouring keys are not correlated', () => {
    const a = draw([0, 0], 5000), b = draw([0, 1], 5000), c = draw([1, 0], 5000)
    const corr = (x: Float32Array, y: Float32Array) => {
      const mx = x.reduce((s, v) => s + v, 0) / x.length, my = y.reduce((s, v) => s + v, 0) / y.length
      let sxy = 0, sxx = 0, syy = 0
      for (let i = 0; i < x.length; i++) {
        sxy += (x[i]! - mx) * (y[i]! - my)
        sxx += (x[i]! - mx) ** 2
        syy += (y[i]! - my) ** 2
      }
      return sxy / Math.sqrt(sxx * syy)
    }
    // |r| of independent uniforms over 5000 pairs exceeds 0.05 with probability < 0.1%
    expect(Math.abs(corr(a, b))).toBeLessThan(0.05)
    expect(Math.abs(corr(a, c))).toBeLessThan(0.05)
  })
})

