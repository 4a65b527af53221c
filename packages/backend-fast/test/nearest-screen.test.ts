import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { fc, test } from '@fast-check/vitest'
import type { Tensor } from '@tessera/core'
import { epilogueSlope, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import { fastBackend, planProgram } from '../src/index.js'
import { relaxedSimdSupported } from '../src/wasm/asm.js'
import { screenShape } from '../src/nearest-scale.js'
import { childRunWithWorkers, residualProgram, runWithWorkers } from './loop-helpers.js'
import { f32, gauss, indices, lcg, nearestStep, program } from './screen-helpers.js'

/**
 * Screening (nearest-screen.ts) only decides which distances the float32 kernel computes, so a
 * screened search must return the unscreened kernel's indices exactly, whatever the data: ties,
 * near-ties, NaN, infinities, magnitudes outside the scalable range, zero rows and codebooks.
 */

describe('nearest-code screening', () => {
  test('the slope of the epilogue decides whether a search is screened', () => {
    expect(nearestStep(program('dist', 8, 32, 40)).screened).toBe(true)
    expect(nearestStep(program('vq', 8, 32, 40)).screened).toBe(true)
    expect(nearestStep(program('cosine', 8, 32, 40)).screened).toBe(true)
    expect(nearestStep(program('abs', 8, 32, 40)).screened).toBe(false)
    // short dot products are not worth it
    expect(nearestStep(program('dist', 8, 8, 40)).screened).toBe(false)
    expect(planProgram(program('dist', 8, 32, 40), { wasm: true, threads: 1, nearestScreen: false }).steps.some((s) => s.kind === 'nearest' && s.step.screened)).toBe(false)
    const dot = { op: 'dot' } as const, t0 = { op: 'term', k: 0 } as const, t1 = { op: 'term', k: 1 } as const
    expect(epilogueSlope({ op: 'sub', a: t0, b: { op: 'mul', a: dot, b: t1 } }, [undefined, 1])).toBe(-1)
    expect(epilogueSlope({ op: 'sub', a: t0, b: { op: 'mul', a: dot, b: t1 } }, [undefined, -1])).toBe(1)
    expect(epilogueSlope({ op: 'mul', a: dot, b: t1 }, [undefined, undefined])).toBeUndefined()
    expect(epilogueSlope({ op: 'div', a: t0, b: dot }, [1])).toBeUndefined()
    expect(epilogueSlope({ op: 'add', a: dot, b: { op: 'neg', a: dot } }, [])).toBeUndefined()
    expect(epilogueSlope({ op: 'neg', a: { op: 'sqrt', a: { op: 'max', a: dot, b: t0 } } }, [undefined])).toBe(-1)
  })

  test('gaussian data, every form, odd and unaligned sizes, 1 and 2 threads: the unscreened indices', async () => {
    for (const [n, d, k, threads] of [[301, 33, 77, 1], [2000, 64, 300, 2], [517, 18, 1000, 1], [4099, 37, 129, 2], [64, 256, 512, 1]] as const) {
      const x = tensorOf(gauss(n * d, n + d), [n, d]), c = tensorOf(gauss(k * d, k + d, 0.7), [k, d])
      for (const form of ['dist', 'vq', 'cosine', 'abs'] as const) {
        const p = program(form, n, d, k)
        expect(await indices(p, x, c, threads, true), `${form} ${n}x${d} vs ${k}, ${threads}t`).toEqual(await indices(p, x, c, threads, false))
      }
    }
  })

  test('ties, near-ties and duplicated codes: the first index, as unscreened (rows left whole go to both threads)', async () => {
    const [n, d, k] = [6000, 32, 96]
    const base = gauss(48 * d, 5)
    // codes 48-95 repeat 0-47, some nudged by one float32 ulp in one coordinate
    const cb = [...base, ...base.map((v, i) => (i % 97 === 0 ? Math.fround(v * (1 + 2 ** -23)) : v))]
    // rows that are codes, or midway between two codes
    const x = Array.from({ length: n * d }, (_, i) => {
      const r = Math.floor(i / d), q = i % d
      return r % 2 === 0 ? cb[(r % k) * d + q]! : Math.fround((cb[(r % k) * d + q]! + cb[((r + 7) % k) * d + q]!) / 2)
    })
    for (const form of ['dist', 'vq', 'cosine', 'sqrt'] as const) {
      const p = program(form, n, d, k)
      const [xt, ct] = [tensorOf(x, [n, d]), tensorOf(cb, [k, d])]
      const want = await indices(p, xt, ct, 1, false)
      expect(await indices(p, xt, ct, 1, true), form).toEqual(want)
      // a duplicated code shares its lane (48 apart): those rows are swept again in float32, here on two threads
      expect(await indices(p, xt, ct, 2, true), form).toEqual(want)
      // rows equal to a code: rounding makes some of their distances negative, and sqrt NaN
      if (form === 'sqrt') expect(want.filter((j, i) => i % 2 === 0 && j !== i % k).length).toBeGreaterThan(0)
    }
  })

  test('a code whose rounding to int16 understates its dot product by nearly the whole bound still wins', async () => {
    // x is +-1 (exact in int16); the codebook's largest |value| is 1, which sets its scale sc
    // (a power of two) for k = 32. Code 0 is 0.49 scale steps along sign(x) in every coordinate: it rounds to zero, its
    // int16 dot product understating the true one by 0.49 * 32 steps. Code 1 is 0.51 steps along
    // sign(x) in 31 coordinates and 0.49 against it in the last: it rounds to one step in 31,
    // overstating its dot product by as much. Code 1 is truly 0.72 steps farther than code 0 but
    // 62 steps nearer by the int16 dot products: only bounds that cover (more than 94% of) the
    // worst rounding keep code 0.
    const d = 32, sc = 2 ** Math.ceil(Math.log2(1 / screenShape(d).qc))
    const r = lcg(3)
    for (let row = 0; row < 8; row++) {
      const x = Array.from({ length: d }, () => (r() < 0.5 ? -1 : 1))
      const w = x.map((v) => 0.49 * sc * v)
      const decoy = x.map((v, i) => (i < 31 ? 0.51 * sc * v : -0.49 * sc * v))
      const far = x.map((v, i) => (i === 0 ? -v : 0))
      const filler = Array.from({ length: 17 }, (_, j) => x.map((v, i) => (i === j ? -0.5 * v : 0)))
      const cb = [w, decoy, far, ...filler].flat()
      const k = cb.length / d
      for (const form of ['dist', 'vq'] as const) {
        const p = program(form, 1, d, k)
        const [xt, ct] = [tensorOf(x, [1, d]), tensorOf(cb, [k, d])]
        expect(await indices(p, xt, ct, 1, false), form).toEqual([0])
        expect(await indices(p, xt, ct, 1, true), form).toEqual([0])
      }
    }
  })

  test('a square root after a bounded epilogue: values apart below it tie above it (the first index wins), and a negative one is a NaN distance', async () => {
    // every code's first coordinate is 0 and each row is (s, 0, ...), so every dot product is 0
    // and a distance is ||c||² (s² is below half its ulp). Code 0: ||c||² = 2^30 + 64 (or + 128),
    // code 1 (the next lane): 2^30; both square roots round to 32768, so code 0 wins the tie.
    // Screened below the square root, code 0's lower bound is above U = 2^30: only U widened to
    // the last value the square root maps to 32768 keeps it.
    const d = 32
    for (const extra of [8, Math.SQRT2 * 8]) {
      const code = (j: number) => Array.from({ length: d }, (_, i) => (j === 0 ? (i === 1 ? 32768 : i === 2 ? Math.fround(extra) : 0) : j === 1 ? (i === 1 ? 32768 : 0) : i === 1 + (j % (d - 1)) ? 46000 : 0))
      const k = 40, n = 24
      const cb = Array.from({ length: k }, (_, j) => code(j)).flat()
      const x = Array.from({ length: n * d }, (_, i) => (i % d === 0 ? 2 ** -(4 + Math.floor(i / d)) : 0))
      for (const form of ['vq', 'sqrt'] as const) {
        const p = program(form, n, d, k)
        expect(nearestStep(p).screened).toBe(true)
        const [xt, ct] = [tensorOf(x, [n, d]), tensorOf(cb, [k, d])]
        const want = await indices(p, xt, ct, 1, false)
        expect(want, `${form}: the tie`).toEqual(Array.from({ length: n }, () => 0))
        expect(await indices(p, xt, ct, 1, true), form).toEqual(want)
      }
    }
    // sqrt(t - 2 x.c) with t a column input: codes 0 and 1 have negative values under the root
    // (NaN distances; the first, code 0, wins), code 1's far below code 0's, so a U taken below
    // the square root would rule code 0 out
    const [n, k] = [8, 40]
    const p = traceOrThrow([f32([n, d]), f32([k, d]), f32([k])], (xt: Tensor, cb: Tensor, t: Tensor) => [xt.matmul(cb.mT).mul(-2).add(t).sqrt().argmin(-1)]).program
    expect(nearestStep(p).screened).toBe(true)
    const x = tensorOf(Array.from({ length: n * d }, (_, i) => (i % d === 0 ? 1 + (i / d) * 0.25 : 0)), [n, d])
    const cb = tensorOf(Array.from({ length: k * d }, (_, i) => (i % d === 1 ? 1 : 0)), [k, d])
    const t = tensorOf(Array.from({ length: k }, (_, j) => (j === 0 ? -1 : j === 1 ? -100 : 100 + j)), [k])
    const plain = await indices(p, x, cb, 1, false, t)
    expect(plain).toEqual(Array.from({ length: n }, () => 0))
    expect(await indices(p, x, cb, 1, true, t)).toEqual(plain)
  })

  test('NaN, infinities, zeros and magnitudes outside the scalable range: the unscreened indices', async () => {
    const [n, d, k] = [40, 20, 50]
    const rows = gauss(n * d, 9)
    const special: [number, number][] = [[0, NaN], [1, Infinity], [2, -Infinity], [3, 1e30], [4, 1e-30], [5, 3e38], [6, 2 ** -45]]
    for (const [r, v] of special) rows[r * d + 3] = v
    for (let q = 0; q < d; q++) rows[7 * d + q] = 0 // a zero row
    for (let q = 0; q < d; q++) rows[8 * d + q] = q === 0 ? 1e-38 : 0 // a tiny row
    const codes = gauss(k * d, 10)
    for (const form of ['dist', 'vq', 'cosine'] as const) {
      const p = program(form, n, d, k)
      const x = tensorOf(rows, [n, d])
      for (const cb of [codes, codes.map(() => 0), codes.map((v, i) => (i === 77 ? NaN : v)), codes.map((v, i) => (i === 5 ? 1e39 : v)), codes.map((v) => v * 1e-20)]) {
        const c = tensorOf(cb, [k, d])
        expect(await indices(p, x, c, 1, true), form).toEqual(await indices(p, x, c, 1, false))
      }
    }
  })

  test('bounded epilogues: a column term beyond 2^E sends the call to float32, where a NaN distance wins', async () => {
    // ||x||² - 1e29 x.c - 1e29 ||c||²: adds, subtracts and products only, so screened with one
    // bound per distance (screenRangeExp). Every value of x is 1e4, code 3's are -1e4 and the
    // others' within 4e3 (fine enough in int16 that screening leaves each row one candidate):
    // code 3's dot product times 1e29 overflows, and so does its column term, so its distance is
    // +Inf - Inf = NaN, and NaN wins; the other distances are finite. Only the check of the
    // column terms sees it.
    const [n, d, k] = [6, 64, 40]
    const x = Array.from({ length: n * d }, () => 1e4)
    const r = lcg(21)
    const codes = Array.from({ length: k * d }, () => Math.fround((r() * 2 - 1) * 4e3))
    for (let q = 0; q < d; q++) codes[3 * d + q] = -1e4
    const p = traceOrThrow([f32([n, d]), f32([k, d])], (xt: Tensor, cb: Tensor) => [
      xt.square().sum(-1, true).sub(xt.matmul(cb.mT).mul(1e29)).add(cb.square().sum(-1).mul(-1e29)).argmin(-1),
    ]).program
    expect(nearestStep(p).screened).toBe(true)
    const [xt, ct] = [tensorOf(x, [n, d]), tensorOf(codes, [k, d])]
    const want = await indices(p, xt, ct, 1, false)
    expect(want).toEqual(Array.from({ length: n }, () => 3))
    expect(await indices(p, xt, ct, 1, true)).toEqual(want)
    // the same program on data within range is screened throughout
    const small = tensorOf(gauss(k * d, 22, 0.1), [k, d]), xs = tensorOf(gauss(n * d, 23), [n, d])
    expect(await indices(p, xs, small, 1, true)).toEqual(await indices(p, xs, small, 1, false))
  })

  test('|x|² summed by the search itself: float32 squares added in a float64, rounded once, as the stored sum', async () => {
    // x = (1, 2^-12 x 63): its squares add to 1 + 63 * 2^-24 in a float64, 1 + 32 * 2^-23 once
    // rounded, but to 1 in a float32 accumulator. Distances |x|² |c|² - 2 x.c (adds, subtracts
    // and products: bounded) of codes 0.5 and 1.5 - 2e-6 along the first axis differ by a few
    // 1e-6, in an order that those two values of |x|² reverse: code 0 wins with the first.
    const [n, d] = [6, 64]
    const x = Array.from({ length: n * d }, (_, i) => (i % d === 0 ? 1 : 2 ** -12))
    const code = (a: number) => Array.from({ length: d }, (_, q) => (q === 0 ? Math.fround(a) : 0))
    const near = [code(0.5), code(1.5 - 2e-6), ...Array.from({ length: 18 }, (_, j) => code(5 + j))]
    const p = (k: number) => traceOrThrow([f32([n, d]), f32([k, d])], (xt: Tensor, cb: Tensor) => [
      xt.square().sum(-1, true).mul(cb.square().sum(-1)).sub(xt.matmul(cb.mT).mul(2)).argmin(-1),
    ]).program
    expect(nearestStep(p(near.length)).rowTermsSummed).toBe(1)
    // and with a code whose |c|² is beyond 2^E, so the call runs in float32 and this thread sums the rows
    for (const cb of [near, [...near, code(2 ** 35)]]) {
      const [xt, ct] = [tensorOf(x, [n, d]), tensorOf(cb.flat(), [cb.length, d])]
      const want = await indices(p(cb.length), xt, ct, 1, false)
      expect(want).toEqual(Array.from({ length: n }, () => 0))
      expect(await indices(p(cb.length), xt, ct, 1, true)).toEqual(want)
    }
    // a |x|² read elsewhere too (here an output) is stored, not summed by the search
    const both = traceOrThrow([f32([n, d]), f32([20, d])], (xt: Tensor, cb: Tensor) => {
      const x2 = xt.square().sum(-1, true)
      return [x2.sub(xt.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1), x2]
    }).program
    expect(nearestStep(both).rowTermsSummed).toBe(0)
    expect(nearestStep(program('dist', 8, 32, 40)).rowTermsSummed).toBe(1)
    expect(nearestStep(program('cosine', 8, 32, 40)).rowTermsSummed).toBe(0)
  })

  test("VectorQuantize's layout: rows (b, n, d) reshaped to (1, b·n, d) and a (1, K, d) codebook; the search sums |x|² itself and the reshape is one copy, as the reference", async () => {
    const [b, n, d, k] = [3, 50, 32, 40]
    const p = traceOrThrow([f32([b, n, d]), f32([1, k, d])], (xt: Tensor, cb: Tensor) => {
      const x = xt.reshape([1, b * n, d])
      const dist = x.square().sum(-1, true).add(cb.square().sum(-1).reshape([1, 1, k])).add(x.matmul(cb.mT).mul(-2)).maximum(1e-8).sqrt().neg()
      const idx = dist.argmax(-1)
      return [idx.reshape([b, n]), cb.reshape([k, d]).gather(idx.reshape([b * n]), 0).reshape([b, n, d]).sub(xt)]
    }).program
    const plan = planProgram(p, { wasm: true, threads: 1 })
    const step = plan.steps.find((s) => s.kind === 'nearest')
    expect(step?.kind === 'nearest' && step.step.rowTermsSummed).toBe(1)
    // no loop sums the rows' squares, and the reshaped rows are a TypedArray copy
    expect(plan.steps.some((s) => s.kind === 'kernel' && s.prim === 'reduce_sum' && plan.slotVars[s.out]!.aval.shape.includes(b * n))).toBe(false)
    expect(plan.steps.some((s) => s.kind === 'kernel' && s.kernel.source.startsWith('copy of'))).toBe(true)
    const ins = [tensorOf(gauss(b * n * d, 31), [b, n, d]), tensorOf(gauss(k * d, 32, 0.8), [1, k, d])]
    const want = interpretProgram(p, ins)
    for (const screen of [true, false]) {
      const be = fastBackend({ threads: 1, nearestScreen: screen, relaxedSimd: false })
      const got = await be.compile(p).run(ins)
      got.forEach((g, i) => expect(Array.from(g.data), `output ${i}, screened ${screen}`).toEqual(Array.from(want[i]!.data)))
      await be.dispose?.()
    }
  })

  test('residual VQ: every layer sums the |x|² of its residual itself, and outputs are the unscreened ones, bit for bit', async () => {
    const [n, d, k, layers] = [700, 32, 96, 3]
    const p = residualProgram(n, d, k, layers)
    const steps = planProgram(p, { wasm: true, threads: 1 }).steps.flatMap((s) => (s.kind === 'nearest' ? [s.step.rowTermsSummed] : []))
    expect(steps).toEqual([1, 1, 1])
    const ins = [tensorOf(gauss(n * d, 31), [n, d]), ...Array.from({ length: layers }, (_, l) => tensorOf(gauss(k * d, 32 + l, 1 / (l + 1)), [k, d]))]
    const run = async (nearestScreen: boolean) => {
      const b = fastBackend({ threads: 1, nearestScreen, relaxedSimd: false })
      try {
        return await runWithWorkers(b.compile(p), ins, 1)
      } finally {
        await b.dispose?.()
      }
    }
    const [got, want] = [await run(true), await run(false)]
    got.forEach((t, o) => expect(Array.from(t.data).every((v, i) => Object.is(v, want[o]!.data[i])), `output ${o}`).toBe(true))
  })

  test.prop([fc.integer({ min: 1, max: 60 }), fc.integer({ min: 16, max: 70 }), fc.integer({ min: 1, max: 90 }), fc.integer({ min: 0, max: 1e6 }), fc.integer({ min: 0, max: 5 })], { numRuns: 25 })(
    'any sizes and data with repeated values: the unscreened indices',
    async (n, d, k, seed, coarse) => {
      // coarse > 0: values on a grid of 2^-coarse steps in [-2, 2], so many distances tie exactly
      const r = lcg(seed)
      const v = () => (coarse > 0 ? Math.round((r() * 4 - 2) * 2 ** coarse) / 2 ** coarse : Math.fround(r() * 4 - 2))
      const x = tensorOf(Array.from({ length: n * d }, v), [n, d]), c = tensorOf(Array.from({ length: k * d }, v), [k, d])
      for (const form of ['dist', 'vq'] as const) {
        const p = program(form, n, d, k)
        expect(await indices(p, x, c, 1, true)).toEqual(await indices(p, x, c, 1, false))
      }
    },
  )

  test('nearestScreen must be a boolean', () => {
    expect(() => fastBackend({ nearestScreen: 'yes' as never })).toThrow(/nearestScreen must be true or false/)
  })

  test('relaxed SIMD (a child process with the flag on Node 20): screened and unscreened indices agree', () => {
    const here = dirname(fileURLToPath(import.meta.url))
    const script = `
const { traceOrThrow, tensorOf } = await import('@tessera/core')
const { fastBackend } = await import(${JSON.stringify(pathToFileURL(join(here, '../src/index.ts')).href)})
${childRunWithWorkers}
const f32 = (shape) => ({ shape, dtype: 'float32' })
let s = 7
const r = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296)
const out = []
for (const [n, d, k, threads] of [[3000, 64, 256, 2], [700, 45, 333, 1]]) {
  const p = traceOrThrow([f32([n, d]), f32([k, d])], (x, cb) => [x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1)]).program
  const x = tensorOf(Array.from({ length: n * d }, () => r() * 2 - 1), [n, d]), c = tensorOf(Array.from({ length: k * d }, () => r() * 2 - 1), [k, d])
  const got = []
  for (const nearestScreen of [true, false]) {
    const b = fastBackend({ threads, relaxedSimd: true, nearestScreen })
    got.push(Array.from((await runWithWorkers(b.compile(p), [x, c], threads))[0].data))
    await b.dispose()
  }
  out.push(got[0].length === n && got[0].every((v, i) => v === got[1][i]))
}
process.stdout.write(JSON.stringify(out), () => process.exit(0))
`
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm')).href
    const flags = relaxedSimdSupported() ? [] : ['--experimental-wasm-relaxed-simd']
    const res = spawnSync(process.execPath, [...flags, '--import', tsx, '--conditions=@tessera/source', '--input-type=module', '-e', script], {
      cwd: join(here, '..'), encoding: 'utf8', timeout: 50_000,
    })
    expect(res.status, res.stderr).toBe(0)
    expect(JSON.parse(res.stdout)).toEqual([true, true])
  })
})
