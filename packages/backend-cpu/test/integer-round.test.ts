import { tensorOf } from '@tessera/core'
import { grid, hostArb, intIn } from '@tessera/core/testing'
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { roundHalfEven } from '../src/index.js'
import { evalFn, values } from './helpers.js'

const numRuns = 100

describe('idiv and mod', () => {
  const pairs = fc.integer({ min: 1, max: 8 }).chain((n) =>
    fc.tuple(hostArb([n], 'int32', intIn(-100000, 100000)), hostArb([n], 'int32', fc.oneof(intIn(-300, -1), intIn(1, 300)))),
  )

  test('a == b * idiv(a, b) + mod(a, b), and mod has the sign of b with |mod| < |b|', () => {
    fc.assert(
      fc.property(pairs, ([a, b]) => {
        const [q, r, back] = evalFn([a, b], (x, y) => {
          const qq = x.idiv(y), rr = x.mod(y)
          return [qq, rr, y.mul(qq).add(rr)]
        })
        expect(values(back!)).toEqual(values(a))
        values(r!).forEach((m, i) => {
          const d = b.data[i]!
          expect(Math.abs(m)).toBeLessThan(Math.abs(d))
          if (m !== 0) expect(Math.sign(m)).toBe(Math.sign(d))
          expect(q!.data[i]).toBe(Math.floor(a.data[i]! / d) + 0)
        })
      }),
      { numRuns },
    )
  })

  test('a zero divisor gives 0 for both (documented, instead of a trap)', () => {
    const [q, r] = evalFn([tensorOf([5, -5, 0], [3], 'int32'), tensorOf([0, 0, 0], [3], 'int32')], (x, y) => [x.idiv(y), x.mod(y)])
    expect(values(q!)).toEqual([0, 0, 0])
    expect(values(r!)).toEqual([0, 0, 0])
  })
})

describe('round is half-to-even', () => {
  const table: readonly [number, number][] = [
    [0.5, 0], [1.5, 2], [2.5, 2], [3.5, 4], [-0.5, -0], [-1.5, -2], [-2.5, -2], [-3.5, -4],
    [0.49999997, 0], [0.50000006, 1], [2.4999998, 2], [2.5000002, 3], [-2.5000002, -3],
    [8388607.5, 8388608], [4194304.5, 4194304], [4194305.5, 4194306], [2 ** 60, 2 ** 60], [-7, -7], [0, 0],
  ]

  test('table', () => {
    const x = tensorOf(table.map((r) => r[0]), [table.length])
    const [r] = evalFn([x], (t) => t.round())
    table.forEach(([input, want], i) => {
      expect(r!.data[i], `round(${input})`).toBe(want)
      expect(roundHalfEven(Math.fround(input))).toBe(want)
    })
  })

  test('|round(x) - x| <= 1/2, ties go to the even neighbour, round is odd and integers are fixed', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 16 }).chain((n) => hostArb([n], 'float32', fc.oneof(grid(1000), grid(50, 2)))), (x) => {
        const [r, rn] = evalFn([x], (t) => [t.round(), t.neg().round().neg()])
        values(r!).forEach((v, i) => {
          const xv = x.data[i]!
          expect(Number.isInteger(v)).toBe(true)
          expect(Math.abs(v - xv)).toBeLessThanOrEqual(0.5)
          if (Math.abs(v - xv) === 0.5) expect(v % 2 === 0).toBe(true)
          if (Number.isInteger(xv)) expect(v).toBe(xv)
          expect(rn!.data[i]).toBe(v)
        })
      }),
      { numRuns },
    )
  })
})
