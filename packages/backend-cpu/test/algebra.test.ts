import { concat, sizeOf, tensorOf } from '@tessera/core'
import { floatIn, hostArb, intIn, permArb, shapeArb } from '@tessera/core/testing'
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { evalFn, floatTensor, ravel, unravel, values } from './helpers.js'

const numRuns = 100
const f32 = Math.fround

describe('broadcasting', () => {
  test('a[m,1] + b[1,n] is the table of a[i] + b[j], rounded once to float32', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 5 }).chain((m) => hostArb([m, 1], 'float32', floatIn(-1e3, 1e3))),
        fc.integer({ min: 1, max: 5 }).chain((n) => hostArb([1, n], 'float32', floatIn(-1e3, 1e3))),
        (a, b) => {
          const [r] = evalFn([a, b], (x, y) => x.add(y))
          const m = a.shape[0]!, n = b.shape[1]!
          expect(r!.shape).toEqual([m, n])
          for (let i = 0; i < m; i++)
            for (let j = 0; j < n; j++) expect(r!.data[i * n + j]).toBe(f32(a.data[i]! + b.data[j]!))
        },
      ),
      { numRuns },
    )
  })

  test('broadcasting commutes: x + y == y + x and x * y == y * x for any broadcastable shapes', () => {
    const pair = shapeArb(0, 3).chain((s) =>
      fc.tuple(
        fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }),
        fc.integer({ min: 0, max: s.length }),
      ).chain(([ones, drop]) => {
        const s2 = s.slice(drop).map((d, i) => (ones[i + drop] ? 1 : d))
        return fc.tuple(hostArb(s, 'float32', floatIn(-100, 100)), hostArb(s2, 'float32', floatIn(-100, 100)))
      }),
    )
    fc.assert(
      fc.property(pair, ([a, b]) => {
        const [s1, s2, p1, p2] = evalFn([a, b], (x, y) => [x.add(y), y.add(x), x.mul(y), y.mul(x)])
        expect(s1!.shape).toEqual(a.shape)
        expect(values(s1!)).toEqual(values(s2!))
        expect(values(p1!)).toEqual(values(p2!))
      }),
      { numRuns },
    )
  })

  test('summing k broadcast copies over the new axis gives k * x exactly', () => {
    fc.assert(
      fc.property(floatTensor(100, 0, 2), fc.integer({ min: 1, max: 6 }), (x, k) => {
        const [r] = evalFn([x], (t) => t.broadcastTo([k, ...t.shape]).sum(0))
        expect(values(r!)).toEqual(values(x).map((v) => f32(k * v)))
      }),
      { numRuns },
    )
  })
})

describe('reductions', () => {
  test('sum over all axes equals the sum of per-axis sums, within float32 rounding', () => {
    fc.assert(
      fc.property(floatTensor(100, 1, 3), (x) => {
        const [all, nested, absSum] = evalFn([x], (t) => [t.sum(), t.sum(0).sum(), t.abs().sum()])
        const diff = Math.abs(all!.data[0]! - nested!.data[0]!)
        // each side rounds to float32 at most rank times, each time by <= 2^-24 of a partial |sum|
        expect(diff).toBeLessThanOrEqual(x.shape.length * 2 ** -23 * absSum!.data[0]!)
      }),
      { numRuns },
    )
  })

  test('int32 sums are exact and independent of the axis order', () => {
    const intTensor = shapeArb(1, 3).chain((s) => hostArb(s, 'int32', intIn(-1000, 1000)))
    fc.assert(
      fc.property(intTensor, (x) => {
        const [all, nested] = evalFn([x], (t) => [t.sum(), t.sum(t.rank - 1).sum()])
        const want = values(x).reduce((a, b) => a + b, 0)
        expect(all!.data[0]).toBe(want)
        expect(nested!.data[0]).toBe(want)
      }),
      { numRuns },
    )
  })

  test('max over all axes is the max of per-axis maxes; max(x) = -min(-x); x[argmin] = min', () => {
    fc.assert(
      fc.property(floatTensor(100, 2, 3), (x) => {
        const [mx, nested, negMin, mn] = evalFn([x], (t) => [t.max(), t.max(0).max(), t.neg().min().neg(), t.min()])
        expect(mx!.data[0]).toBe(Math.max(...values(x)))
        expect(nested!.data[0]).toBe(mx!.data[0])
        expect(negMin!.data[0]).toBe(mx!.data[0])
        expect(mn!.data[0]).toBe(Math.min(...values(x)))
        const [row] = evalFn([x], (t) => {
          const flat = t.reshape([-1])
          return flat.gather(flat.argmin(0))
        })
        expect(row!.data[0]).toBe(mn!.data[0])
      }),
      { numRuns },
    )
  })

  test('sum over an empty axis is 0', () => {
    const [r] = evalFn([tensorOf([], [3, 0])], (t) => t.sum(1))
    expect(values(r!)).toEqual([0, 0, 0])
  })
})

describe('matmul', () => {
  const mats = fc
    .tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 7 }), fc.integer({ min: 1, max: 6 }))
    .chain(([m, k, n]) => fc.tuple(hostArb([m, k], 'float32', floatIn(-10, 10)), hostArb([k, n], 'float32', floatIn(-10, 10))))

  test('equals a float64 naive product rounded once to float32', () => {
    fc.assert(
      fc.property(mats, ([a, b]) => {
        const [r] = evalFn([a, b], (x, y) => x.matmul(y))
        const [m, k] = a.shape as [number, number], n = b.shape[1]!
        for (let i = 0; i < m; i++)
          for (let j = 0; j < n; j++) {
            let s = 0
            for (let q = 0; q < k; q++) s += a.data[i * k + q]! * b.data[q * n + j]!
            expect(r!.data[i * n + j]).toBe(f32(s))
          }
      }),
      { numRuns },
    )
  })

  test('(A B)^T = B^T A^T exactly, and batched matmul is per-batch matmul', () => {
    fc.assert(
      fc.property(mats, ([a, b]) => {
        const [lhs, rhs, batched, single] = evalFn([a, b], (x, y) => [
          x.matmul(y).mT,
          y.mT.matmul(x.mT),
          x.expandDims(0).broadcastTo([3, ...x.shape]).matmul(y.expandDims(0).broadcastTo([3, ...y.shape])).index(0, 2),
          x.matmul(y),
        ])
        expect(values(lhs!)).toEqual(values(rhs!))
        expect(values(batched!)).toEqual(values(single!))
      }),
      { numRuns },
    )
  })
})

describe('movement', () => {
  test('transpose by p then by p^-1 is the identity; each element lands at the permuted index', () => {
    fc.assert(
      fc.property(
        shapeArb(1, 4).chain((s) => fc.tuple(hostArb(s, 'float32', floatIn(-100, 100)), permArb(s.length))),
        ([x, perm]) => {
          const inv = perm.map((_, i) => perm.indexOf(i))
          const [t, back] = evalFn([x], (a) => [a.transpose(perm), a.transpose(perm).transpose(inv)])
          expect(values(back!)).toEqual(values(x))
          const tShape = perm.map((p) => x.shape[p]!)
          expect(t!.shape).toEqual(tShape)
          for (let i = 0; i < sizeOf(tShape); i++) {
            const idx = unravel(i, tShape)
            const src = new Array<number>(perm.length)
            perm.forEach((p, a) => (src[p] = idx[a]!))
            expect(t!.data[i]).toBe(x.data[ravel(src, x.shape)])
          }
        },
      ),
      { numRuns },
    )
  })

  test('reshape to any shape of the same size and back is the identity and keeps row-major order', () => {
    fc.assert(
      fc.property(floatTensor(), fc.nat(), (x, pick) => {
        const n = sizeOf(x.shape)
        const divisors = [...Array(n).keys()].map((i) => i + 1).filter((d) => n % d === 0)
        const d = divisors[pick % divisors.length]!
        const [r, back] = evalFn([x], (a) => [a.reshape([d, n / d]), a.reshape([d, -1]).reshape(x.shape)])
        expect(values(r!)).toEqual(values(x))
        expect(back!.shape).toEqual(x.shape)
        expect(values(back!)).toEqual(values(x))
      }),
      { numRuns },
    )
  })

  test('slicing a padded tensor at the pad offsets gives the tensor back; the border holds the pad value', () => {
    fc.assert(
      fc.property(
        floatTensor(100, 1, 3).chain((x) =>
          fc.tuple(
            fc.constant(x),
            fc.array(fc.integer({ min: 0, max: 2 }), { minLength: x.shape.length, maxLength: x.shape.length }),
            fc.array(fc.integer({ min: 0, max: 2 }), { minLength: x.shape.length, maxLength: x.shape.length }),
          ),
        ),
        ([x, lo, hi]) => {
          const [padded, back, total] = evalFn([x], (a) => {
            const p = a.pad(lo, hi, 7)
            return [p, p.slice(lo, lo.map((l, i) => l + x.shape[i]!)), p.sum()]
          })
          expect(values(back!)).toEqual(values(x))
          const border = sizeOf(padded!.shape) - sizeOf(x.shape)
          const xs = values(x).reduce((a, b) => a + b, 0)
          const scale = values(x).reduce((a, b) => a + Math.abs(b), 0) + 7 * border
          expect(Math.abs(total!.data[0]! - (xs + 7 * border))).toBeLessThanOrEqual(2 ** -23 * scale)
        },
      ),
      { numRuns },
    )
  })

  test('concat of a split is the identity; slicing a concat gives the parts back', () => {
    fc.assert(
      fc.property(
        floatTensor(100, 1, 3).chain((x) => fc.tuple(fc.constant(x), fc.integer({ min: 0, max: x.shape.length - 1 }), fc.nat())),
        ([x, axis, at]) => {
          const d = x.shape[axis]!
          const cut = at % (d + 1)
          const [whole, left, right] = evalFn([x], (a) => {
            const l = a.sliceAxis(axis, 0, cut), r = a.sliceAxis(axis, cut)
            const parts = [l, r].filter((t) => t.shape[axis]! > 0)
            const c = concat(parts, axis)
            return [c, c.sliceAxis(axis, 0, cut), c.sliceAxis(axis, cut)]
          })
          expect(values(whole!)).toEqual(values(x))
          expect(left!.shape[axis]).toBe(cut)
          expect(right!.shape[axis]).toBe(d - cut)
        },
      ),
      { numRuns },
    )
  })

  test('even and odd strided slices interleave back to the original', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 9 }).chain((n) => hostArb([n], 'float32', floatIn(-10, 10))), (x) => {
        const [even, odd] = evalFn([x], (a) => [a.sliceAxis(0, 0, undefined, 2), a.sliceAxis(0, 1, undefined, 2)])
        const merged: number[] = []
        values(even!).forEach((v, i) => {
          merged.push(v)
          if (i < odd!.data.length) merged.push(odd!.data[i]!)
        })
        expect(merged).toEqual(values(x))
      }),
      { numRuns },
    )
  })
})

describe('gather and iota', () => {
  test('iota holds the index along its axis', () => {
    fc.assert(
      fc.property(shapeArb(1, 3, 5).chain((s) => fc.tuple(fc.constant(s), fc.integer({ min: 0, max: s.length - 1 }))), ([s, axis]) => {
        const [r] = evalFn([tensorOf([0], [1])], (t) => t.builder.iota(s, axis))
        values(r!).forEach((v, i) => expect(v).toBe(unravel(i, s)[axis]))
      }),
      { numRuns },
    )
  })

  test('gather with iota is the identity; gather picks x[idx] along the axis', () => {
    const arb = floatTensor(100, 1, 3).chain((x) =>
      fc.integer({ min: 0, max: x.shape.length - 1 }).chain((axis) =>
        fc.tuple(fc.constant(x), fc.constant(axis), hostArb([4], 'int32', intIn(0, x.shape[axis]! - 1))),
      ),
    )
    fc.assert(
      fc.property(arb, ([x, axis, idx]) => {
        const d = x.shape[axis]!
        const [same, picked] = evalFn([x, idx], (a, i) => [a.gather(a.builder.iota([d], 0), axis), a.gather(i, axis)])
        expect(values(same!)).toEqual(values(x))
        const outShape = [...x.shape.slice(0, axis), 4, ...x.shape.slice(axis + 1)]
        expect(picked!.shape).toEqual(outShape)
        for (let o = 0; o < sizeOf(outShape); o++) {
          const oi = unravel(o, outShape)
          const src = [...oi]
          src[axis] = idx.data[oi[axis]!]!
          expect(picked!.data[o]).toBe(x.data[ravel(src, x.shape)])
        }
      }),
      { numRuns },
    )
  })

  test('gather composes: x[i][j] = x[i[j]]', () => {
    const arb = fc.integer({ min: 1, max: 6 }).chain((n) =>
      fc.tuple(hostArb([n, 2], 'float32', floatIn(-10, 10)), hostArb([5], 'int32', intIn(0, n - 1)), hostArb([3], 'int32', intIn(0, 4))),
    )
    fc.assert(
      fc.property(arb, ([x, i, j]) => {
        const [lhs, rhs] = evalFn([x, i, j], (a, ii, jj) => [a.gather(ii).gather(jj), a.gather(ii.gather(jj))])
        expect(values(lhs!)).toEqual(values(rhs!))
      }),
      { numRuns },
    )
  })

  test('an out-of-range gather index is an error naming the index and axis, never a silent read', () => {
    const x = tensorOf([1, 2, 3], [3])
    const i = tensorOf([0, 3], [2], 'int32')
    expect(() => evalFn([x, i], (a, ii) => a.gather(ii))).toThrow(/index 3 .*out of range \[0, 3\) on axis 0/)
  })
})
