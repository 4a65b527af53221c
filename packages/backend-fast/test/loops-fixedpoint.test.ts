import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastTanh } from '../src/fastmath.js'
import { fastBackend, planProgram } from '../src/index.js'
import { expectSameBits, f32, rowChainOf, runUntilShared } from './loop-helpers.js'

const F = Math.fround

/** Float32 values that stress exactness rules: signed zeros, subnormals, extremes, non-finite values, halves. */
const SPECIAL = [0, -0, 1e-45, -1e-45, 1e-40, -3e-39, 1.1754944e-38, -1.1754944e-38, 3.4e38, -3.4e38, 1.7e38,
  Infinity, -Infinity, NaN, 0.5, -0.5, 1.5, -2.5, 3, -7, 0.1, -0.3, 2 ** 23 + 1, -(2 ** 24), 1e30, -6e-8]

const sources = (p: Program): string[] =>
  planProgram(p, { wasm: false, threads: 1 }).steps.flatMap((s) => (s.kind === 'kernel' ? [s.kernel.source] : []))

async function sameAsReference(p: Program, ins: HostTensor[]): Promise<void> {
  expectSameBits(await runOrThrow(p, ins, fastBackend({ wasm: false })), interpretProgram(p, ins), 'fast vs reference')
}

/** FSQ forward as the bench traces it (codes and indices). */
function fsqProgram(n: number, levels: readonly number[]): Program {
  const d = levels.length
  const eps = 1e-3
  const halfL = levels.map((l) => ((l - 1) * (1 + eps)) / 2)
  const offset = levels.map((l) => (l % 2 === 0 ? 0.5 : 0))
  const shift = levels.map((_, i) => Math.atanh(offset[i]! / halfL[i]!))
  const halfWidth = levels.map((l) => Math.floor(l / 2))
  const basis = levels.map((_, i) => levels.slice(0, i).reduce((a, b) => a * b, 1))
  return traceOrThrow([f32([n, d])], (z: Tensor) => {
    const c = (xs: number[]) => z.builder.constant(xs, [d])
    const bounded = z.add(c(shift)).tanh().mul(c(halfL)).sub(c(offset))
    const codes = bounded.round().div(c(halfWidth))
    const zhat = codes.mul(c(halfWidth)).add(c(halfWidth))
    return [codes, zhat.mul(c(basis)).sum(-1).round().cast('int32')]
  }).program
}

describe('division by a literal power of two is a multiply by its reciprocal', () => {
  // literal divisors appear in unrolled reductions (constants along the reduced axis) and as scalars
  const divisors = [4, 0.5, -2, 2 ** -126, 2 ** -149, 2 ** 100, 1]

  test('on special values and as unrolled literals it equals the reference bit for bit, and no division is left', async () => {
    const d = divisors.length
    const p = traceOrThrow([f32([SPECIAL.length, d])], (x: Tensor) => {
      const q = x.div(x.builder.constant(divisors, [d]))
      return [q, q.sum(-1), x.div(8), x.div(-0.25)]
    }).program
    const src = sources(p).join('\n')
    expect(src).not.toMatch(/ \/ /)
    expect(src).toContain('* 0.25')
    expect(src).toContain('* 2)') // 1 / 0.5
    expect(src).toContain('* 7.1362384635298e+44') // 2^149 = 1 / 2^-149
    const xs = SPECIAL.flatMap((v, i) => divisors.map((_, j) => (j % 2 === 0 ? v : SPECIAL[(i + j) % SPECIAL.length]!)))
    await sameAsReference(p, [tensorOf(xs, [SPECIAL.length, d])])
  })

  test.prop([fc.array(fc.float(), { minLength: 12, maxLength: 12 }), fc.integer({ min: -149, max: 127 })], { numRuns: 100 })(
    'on any float32 and any float32 power of two it equals the reference',
    async (xs, k) => {
      const c = 2 ** k
      const p = traceOrThrow([f32([4, 3])], (x: Tensor) => [x.div(c), x.div(x.builder.constant([c, -c, 1 / 4], [3])).sum(-1)]).program
      await sameAsReference(p, [tensorOf(xs, [4, 3])])
    },
  )

  test('a divisor that is not a power of two stays a division', () => {
    const p = traceOrThrow([f32([2, 3])], (x: Tensor) => [x.div(3), x.div(x.builder.constant([0.1, 6, 5], [3])).sum(-1)]).program
    const src = sources(p).join('\n')
    expect(src).toContain('/ 3')
    expect(src).toContain('/ 0.10000000149011612')
  })
})

describe('fixed-point values (bounded multiples of a power of two) skip fround only where exact', () => {
  test('round of a quarter-integer is not taken as an integer; zeros, halves and NaN equal the reference', async () => {
    const xs = [...SPECIAL, ...[-0.1, -0.05, 0.05, 0.11, 0.3, 0.21, -0.21].map(F)]
    const p = traceOrThrow([f32([xs.length])], (x: Tensor) => {
      const t = x.tanh().mul(5).round() // integers in [-5, 5] or NaN
      const quarter = t.div(4) // exact: no fround
      return [quarter, quarter.round(), quarter.floor(), quarter.round().mul(3).add(quarter), t.mul(2 ** 22).add(0.25)]
    }).program
    const src = sources(p).join('\n')
    expect(src).toMatch(/= \(\w+ \* 0\.25\);/) // the quotient is exact, not rounded
    expect(src).toContain('Math.floor(') // the floor of a quarter-integer is computed
    expect(src).toMatch(/F\(\w+ \+ 0\.25\)/) // 5 * 2^22 + 0.25 needs 25 bits: rounded
    await sameAsReference(p, [tensorOf(xs, [xs.length])])
  })

  test('inline round half to even of bounded values: exact halves go to even, zero results keep the sign, as the reference', async () => {
    // float32 neighbours of the arguments where 3 tanh(x) is 0.5, -0.5, 1.5, -2.5: some round to exactly those halves
    const xs: number[] = [0, -0, NaN, Infinity, -Infinity, 1e-40, -1e-40, -0.1, 0.1, -1e-7]
    for (const h of [0.5, -0.5, 1.5, -2.5]) {
      const c = F(Math.atanh(h / 3))
      for (let i = -300; i <= 300; i++) xs.push(F(c + i * Math.abs(c) * 2 ** -24))
    }
    const ins = [tensorOf(xs, [xs.length])]
    const scaled = traceOrThrow([f32([xs.length])], (x: Tensor) => [x.tanh().mul(3)]).program
    const halves = Array.from(interpretProgram(scaled, ins)[0]!.data).filter((v) => Math.abs(v % 1) === 0.5).length
    expect(halves).toBeGreaterThanOrEqual(4) // the sweep does reach exact halves
    const p = traceOrThrow([f32([xs.length])], (x: Tensor) => [x.tanh().mul(3).round()]).program
    const src = sources(p).join('\n')
    expect(src).toContain('SGN(')
    expect(src).not.toContain('RNE(')
    expect(Array.from(interpretProgram(p, ins)[0]!.data).some((v) => Object.is(v, -0))).toBe(true)
    await sameAsReference(p, ins)
  })

  test.prop([fc.array(fc.oneof(fc.float(), fc.constantFrom(...SPECIAL), fc.integer({ min: -64, max: 64 }).map((k) => k / 4)), { minLength: 16, maxLength: 16 })], { numRuns: 100 })(
    'inline round half to even of unbounded float32 values (large, halves, signed zeros, NaN, infinities) equals the reference',
    async (xs) => {
      const p = traceOrThrow([f32([16])], (x: Tensor) => [x.round(), x.mul(0.5).round().cast('int32')]).program
      expect(sources(p).join('\n')).not.toContain('RNE(')
      await sameAsReference(p, [tensorOf(xs, [16])])
    },
  )

  test('short unrolled copies (LFQ signs and weights) stay copy after copy', () => {
    const p = traceOrThrow([f32([4, 16])], (x: Tensor) => {
      const pos = x.gt(0)
      const bits = x.builder.constant(Array.from({ length: 16 }, (_, i) => 2 ** (15 - i)), [16], 'int32')
      return [pos.cast('float32').mul(2).sub(1), pos.cast('int32').mul(bits).sum(-1)]
    }).program
    const [src] = sources(p)
    expect(src).not.toContain('r1 <')
    expect(src).not.toContain('f + ')
  })

  test('a loop reading a stored sum of integer-valued terms knows it is an integer (no fround, cast by | 0), as the reference', async () => {
    const n = SPECIAL.length
    const p = traceOrThrow([f32([n, 4])], (x: Tensor) => {
      const s = x.tanh().mul(3).round().mul(x.builder.constant([1, 4, 16, 64], [4])).sum(-1) // integers, |s| <= 3 * 85
      return [s.mul(0.5).add(s).floor(), s.cast('int32'), s.div(2).round()] // one loop each
    }).program
    const [sum, ...readers] = sources(p)
    expect(sum).toContain('s +=')
    const read = readers.join('\n')
    expect(read).not.toContain('F(')
    expect(read).not.toContain('CI(')
    expect(read).toContain('| 0')
    expect(read).toContain('Math.floor(') // s * 0.5 + s is an exact multiple of 1/2; its floor is computed
    const xs = SPECIAL.flatMap((v, i) => [v, -v, SPECIAL[(i + 5) % n]!, F(v * 0.3)])
    await sameAsReference(p, [tensorOf(xs, [n, 4])])
  })

  test('adding +0 turns -0 into +0, subtracting +0 and multiplying by 1 keep every value', async () => {
    const p = traceOrThrow([f32([SPECIAL.length])], (x: Tensor) => [x.add(0), x.sub(0), x.mul(1), x.add(-0)]).program
    const src = sources(p).join('\n')
    expect(src).not.toContain('F(')
    await sameAsReference(p, [tensorOf(SPECIAL, [SPECIAL.length])])
  })

  test.prop([fc.array(fc.float(), { minLength: 15, maxLength: 15 })], { numRuns: 60 })(
    'FSQ codes and indices (levels [8, 8, 8, 5, 5]) equal the reference on any float32 inputs',
    async (xs) => {
      await sameAsReference(fsqProgram(3, [8, 8, 8, 5, 5]), [tensorOf(xs, [3, 5])])
    },
  )

  test('FSQ: the level sum is unrolled with tanh inline, codes are exact multiplies, and special inputs equal the reference', async () => {
    const n = SPECIAL.length
    const p = fsqProgram(n, [8, 8, 8, 5, 5])
    const [red] = sources(p)
    expect(red).not.toContain('r1 <') // unrolled
    expect(red).toMatch(/\[f \+ 4\]/) // long copies interleaved: each reads its own element at f + k
    expect(red).toContain('TANH_TAB[')
    expect(red).not.toMatch(/TANH\(|RNE\(|\/ \d/) // no helper call, no division by a level constant
    // rounded: z + shift, tanh, tanh * halfL, - offset (levels with offset 0.5); the rest is exact
    expect(red!.match(/F\(/g)!.length).toBe(3 * 4 + 2 * 2)
    const xs = SPECIAL.flatMap((v, i) => [v, -v, SPECIAL[(i + 3) % n]!, F(v * 0.37), F(-v * 1.7)])
    await sameAsReference(p, [tensorOf(xs, [n, 5])])
  })

  test('FSQ shared with a worker thread gives the reference bits (the worker rebuilds the inline tanh table)', async () => {
    const n = 65536
    const p = fsqProgram(n, [8, 8, 8, 5, 5])
    const xs = new Float32Array(n * 5)
    for (let i = 0; i < xs.length; i++) xs[i] = Math.sin(i * 0.61) * 2.5 + (i % 7 === 0 ? 1e-40 : 0)
    const ins = [tensorOf(xs, [n, 5])]
    const ex = fastBackend({ wasm: false, threads: 2 }).compile(p)
    try {
      expect(rowChainOf(ex).threads).toBe(2)
      expect(await runUntilShared(ex, ins, interpretProgram(p, ins))).toBe(true)
    } finally {
      ex.dispose()
    }
  })
})

describe('inline tanh', () => {
  test('a generated loop computes exactly fround(fastTanh(x)), and rarely differs from the reference by one ulp', async () => {
    const xs: number[] = [...SPECIAL, 9.01, -9.01, 9.1, -9.1, 9.0999999, 20, -25].map(F)
    for (let i = 0; i < 40000; i++) xs.push(F(-10 + i * 0.0005))
    for (let i = -2000; i <= 2000; i++) xs.push(F(i * 1e-7))
    const p = traceOrThrow([f32([xs.length])], (x: Tensor) => [x.tanh()]).program
    const src = sources(p).join('\n')
    expect(src).toContain('TANH_TAB[')
    expect(src).not.toContain('TANH(')
    const [got] = await runOrThrow(p, [tensorOf(xs, [xs.length])], fastBackend({ wasm: false }))
    let differ = 0
    xs.forEach((x, i) => {
      const g = got!.data[i]!
      if (!Object.is(g, F(fastTanh(x)))) expect.fail(`x = ${x}: loop ${g}, fastTanh ${F(fastTanh(x))}`)
      const want = F(Math.tanh(x))
      if (!Object.is(g, want)) {
        differ++
        expect(Math.abs(g - want) / Math.abs(want)).toBeLessThanOrEqual(2 ** -23)
      }
    })
    expect(differ).toBeLessThan(10)
  })
})

describe('max and min written inline', () => {
  const pairs = fc.array(fc.tuple(fc.constantFrom(...SPECIAL), fc.constantFrom(...SPECIAL)), { minLength: 1, maxLength: 40 })
  test.prop([pairs, fc.constantFrom(...SPECIAL)], { numRuns: 60 })('of two values and of a value and a literal: the reference\'s bits (NaN, signed zeros)', async (xy, lit) => {
    const n = xy.length
    const p = traceOrThrow([f32([n]), f32([n])], (x: Tensor, y: Tensor) => [
      x.mul(1).maximum(y.mul(1)), x.mul(1).minimum(y.mul(1)), x.mul(1).maximum(lit), x.mul(1).minimum(lit),
      y.builder.full([n], lit).maximum(x.mul(1)), y.builder.full([n], lit).minimum(x.mul(1)),
    ]).program
    // every max and min of these kernels is inline (its operands are locals or literals)
    expect(sources(p).some((src) => /\bM(AX|IN)\(/.test(src))).toBe(false)
    await sameAsReference(p, [tensorOf(xy.map((v) => v[0]), [n]), tensorOf(xy.map((v) => v[1]), [n])])
  })
})
