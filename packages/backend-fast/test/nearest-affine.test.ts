import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect, test } from 'vitest'
import type { Epilogue } from '@tessera/core'
import { affineEpilogue, affineInfoBytes, writeAffine } from '../src/nearest-affine.js'
import { f32, gauss, indices, lcg, nearestStep, program } from './screen-helpers.js'

/**
 * Affine screening (nearest-affine.ts) ranks codes by one value per distance and leaves the
 * float32 kernel every code within a threshold of the best; the float32 kernel decides. So the
 * screened indices must be the unscreened ones, also where float32 rounding of the epilogue, not
 * the dot products, decides between codes.
 */

/** Indices of the exact real-valued argmin of |x|² - 2x·c + |c|² (float64), for comparison. */
function realArgmin(x: number[], cb: number[], d: number): number[] {
  const n = x.length / d, k = cb.length / d
  return Array.from({ length: n }, (_, i) => {
    let best = 0, bd = Infinity
    for (let j = 0; j < k; j++) {
      let s = 0
      for (let q = 0; q < d; q++) s += (x[i * d + q]! - cb[j * d + q]!) ** 2
      if (s < bd) [best, bd] = [j, s]
    }
    return best
  })
}

describe('affine screening', () => {
  test('squared euclidean distance, a plain dot, VectorQuantize clamped square root and an unclamped one are affine (with a tail)', () => {
    for (const form of ['dist', 'cosine', 'vq', 'sqrt'] as const) expect(nearestStep(program(form, 8, 32, 40)).affineScreen, form).toBe(true)
    const dot = { op: 'dot' } as const, r0 = { op: 'term', k: 0 } as const, c1 = { op: 'term', k: 1 } as const, c2 = { op: 'term', k: 2 } as const
    expect(affineEpilogue({ op: 'add', a: { op: 'sub', a: r0, b: { op: 'mul', a: dot, b: c1 } }, b: c2 }, [1, 2])).toBe(true)
    // a row term as a factor, a product of two dot products, no dot product at all, a division
    expect(affineEpilogue({ op: 'mul', a: dot, b: r0 }, [1, 2])).toBe(false)
    expect(affineEpilogue({ op: 'mul', a: dot, b: dot }, [1, 2])).toBe(false)
    expect(affineEpilogue({ op: 'add', a: r0, b: c1 }, [1, 2])).toBe(false)
    expect(affineEpilogue({ op: 'div', a: dot, b: c1 }, [1, 2])).toBe(false)
  })

  test('per call: a factor that is not one constant, a column term that is not finite, or no dot product left refuses; else -C/|α| per column and -Inf for padding', () => {
    const n = 5, npad = 8
    const mem = new ArrayBuffer(4096)
    const f = new Float32Array(mem)
    const col = (values: number[][]) => values.forEach((v, ci) => f.set(v, ci * npad))
    const dot = { op: 'dot' } as const, r0 = { op: 'term', k: 0 } as const, t1 = { op: 'term', k: 1 } as const, t2 = { op: 'term', k: 2 } as const
    // |x|² - 2 dot + |c|²: term 1 the constant 2, term 2 the |c|²
    const epi = { op: 'add', a: { op: 'sub', a: r0, b: { op: 'mul', a: dot, b: t1 } }, b: t2 } as const
    const write = (e: Epilogue = epi) => writeAffine(mem, { affine: e, tail: [] }, [0], [1, 2], 0, n, npad, 2 * npad, 1024)
    col([[2, 2, 2, 2, 2], [1, 3, 5, 7, 9]])
    expect(write()).toBe(true)
    expect(Array.from(f.subarray(2 * npad, 3 * npad))).toEqual([-0.5, -1.5, -2.5, -3.5, -4.5, -Infinity, -Infinity, -Infinity])
    // σ: 1 where the distance falls as the dot product grows
    expect(f[1024 / 4]).toBe(1)
    expect(affineInfoBytes(1)).toBe(8 + 8 * 10)
    col([[2, 2, 2, 2.5, 2], [1, 3, 5, 7, 9]])
    expect(write()).toBe(false)
    col([[2, 2, 2, 2, 2], [1, 3, NaN, 7, 9]])
    expect(write()).toBe(false)
    col([[0, 0, 0, 0, 0], [1, 3, 5, 7, 9]])
    expect(write()).toBe(false)
    // a clamp: one constant, written after σ; a clamp whose values differ refuses
    col([[2, 2, 2, 2, 2], [1, 3, 5, 7, 9]])
    expect(writeAffine(mem, { affine: epi, clamp: 1, tail: ['sqrt'] }, [0], [1, 2], 0, n, npad, 2 * npad, 1024)).toBe(true)
    expect(f[1024 / 4 + 1]).toBe(2)
    expect(writeAffine(mem, { affine: epi, clamp: 2, tail: ['sqrt'] }, [0], [1, 2], 0, n, npad, 2 * npad, 1024)).toBe(false)
    // an argmin of the dot product itself: σ is -1, no column values; its argmax (negated): 1
    col([[2, 2, 2, 2, 2], [1, 3, 5, 7, 9]])
    expect(write(dot)).toBe(true)
    expect(f[1024 / 4]).toBe(-1)
    expect(Array.from(f.subarray(2 * npad, 2 * npad + n)).every((v) => v === 0)).toBe(true)
    expect(write({ op: 'neg', a: dot })).toBe(true)
    expect(f[1024 / 4]).toBe(1)
  })

  test('rows far from the origin and codes near it: |x|² rounds distances together in float32, and the first of them wins', async () => {
    // |x|² ~ 1e7 (a float32 step of 1), -2x·c spread over a few tenths: many codes' distances
    // round to the same float32, so the float32 kernel's pick is not the real argmin; only a
    // threshold that covers the epilogue's rounding keeps it a candidate
    const [n, d, k] = [2000, 32, 300]
    const x = gauss(n * d, 41, 600), cb = gauss(k * d, 42, 3e-4)
    const p = program('dist', n, d, k)
    const [xt, ct] = [tensorOf(x, [n, d]), tensorOf(cb, [k, d])]
    const want = await indices(p, xt, ct, 1, false)
    const real = realArgmin(x, cb, d)
    expect(want.filter((j, i) => j !== real[i]).length, 'rows where float32 rounding picks another code').toBeGreaterThan(n / 4)
    expect(await indices(p, xt, ct, 1, true)).toEqual(want)
    expect(await indices(p, xt, ct, 2, true)).toEqual(want)
  })

  test('codes far from the origin and rows near it: |c|² decides, in float32 steps, and the first of equal ones wins', async () => {
    // codes of ±1000 in each coordinate with one nudged: |c|² ~ 3.2e7 (float32 steps of 2), rows
    // of 1e-5 whose dot products move distances by far less than a step
    const [n, d, k] = [200, 32, 256]
    const r = lcg(43)
    const cb = Array.from({ length: k * d }, (_, i) => Math.fround((r() < 0.5 ? -1000 : 1000) + (i % d === 0 ? (r() - 0.5) * 4e-3 : 0)))
    const x = gauss(n * d, 44, 1e-5)
    for (const form of ['dist', 'cosine'] as const) {
      const p = program(form, n, d, k)
      const [xt, ct] = [tensorOf(x, [n, d]), tensorOf(cb, [k, d])]
      const want = await indices(p, xt, ct, 1, false)
      expect(await indices(p, xt, ct, 1, true), form).toEqual(want)
    }
  })

  test('a scaled form (|x|² - 0.75 x·c + 3 |c|², argmin, and its argmax with the signs turned) and a constant added: the unscreened indices', async () => {
    const [n, d, k] = [600, 40, 200]
    const forms = [
      (x: Tensor, cb: Tensor) => x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(0.75)).add(cb.square().sum(-1).mul(3)).argmin(-1),
      (x: Tensor, cb: Tensor) => x.matmul(cb.mT).mul(0.75).sub(cb.square().sum(-1).mul(3)).add(7).argmax(-1),
    ]
    const x = tensorOf(gauss(n * d, 45), [n, d]), c = tensorOf(gauss(k * d, 46, 0.3), [k, d])
    for (const form of forms) {
      const p = traceOrThrow([f32([n, d]), f32([k, d])], form).program
      expect(nearestStep(p).affineScreen).toBe(true)
      const want = await indices(p, x, c, 1, false)
      expect(await indices(p, x, c, 1, true)).toEqual(want)
      expect(await indices(p, x, c, 2, true)).toEqual(want)
    }
  })

  test('an intermediate that overflows float32 although the distance is scaled back: rows go to float32, where the first -Inf wins', async () => {
    // (-1e36 x·c + 1e36 |c|²) * 1e-36: the rounding it carries to the distance is small, but
    // -1e36 x·c is -Inf wherever x·c > 340, so every such code ties at -Inf and the first wins
    const [n, d, k] = [300, 32, 120]
    const p = traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => [
      x.matmul(cb.mT).mul(-1e36).add(cb.square().sum(-1).mul(1e36)).mul(1e-36).argmin(-1),
    ]).program
    expect(nearestStep(p).affineScreen).toBe(true)
    const x = tensorOf(gauss(n * d, 47, 30), [n, d]), c = tensorOf(gauss(k * d, 48), [k, d])
    const want = await indices(p, x, c, 1, false)
    // the same ranking without the overflow picks other codes in most rows
    const scaledBack = traceOrThrow([f32([n, d]), f32([k, d])], (xt: Tensor, cb: Tensor) => [xt.matmul(cb.mT).neg().add(cb.square().sum(-1)).argmin(-1)]).program
    const plain = await indices(scaledBack, x, c, 1, false)
    expect(want.filter((j, i) => j !== plain[i]).length).toBeGreaterThan(n / 2)
    expect(await indices(p, x, c, 1, true)).toEqual(want)
  })

  test('a clamp by a column input: one value, screened affinely; values that differ, screened with bounds through the square root; both the unscreened indices', async () => {
    const [n, d, k] = [3000, 32, 200]
    const p = traceOrThrow([f32([n, d]), f32([k, d]), f32([k])], (x: Tensor, cb: Tensor, t: Tensor) => [
      x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).maximum(t).sqrt().argmin(-1),
    ]).program
    expect(nearestStep(p).affineScreen).toBe(true)
    // codes 100-199 are codes 0-99 moved by ±0.1 in every coordinate (a squared distance of
    // 0.32), rows are near codes: the clamp at 0.5 ties a row near code j + 100 with code j, far
    // above the least distance, and code j wins
    const half = gauss((k / 2) * d, 49), r = lcg(50)
    const cb = [...half, ...half.map((v) => Math.fround(v + (r() < 0.5 ? -0.1 : 0.1)))]
    const x = tensorOf(Array.from({ length: n * d }, (_, i) => Math.fround(cb[(Math.floor(i / d) % k) * d + (i % d)]! + (r() - 0.5) * 0.02)), [n, d])
    const c = tensorOf(cb, [k, d])
    for (const t of [Array.from({ length: k }, () => 0.5), Array.from({ length: k }, (_, j) => 0.5 - 0.001 * (j % 7))]) {
      const run = (nearestScreen: boolean) => indices(p, x, c, 2, nearestScreen, tensorOf(t, [k]))
      const want = await run(false)
      if (t[1] === t[0]) expect(want.filter((j, i) => i % k >= k / 2 && j === (i % k) - k / 2).length, 'rows whose clamped distances tie and go to an earlier code').toBe(n / 2)
      expect(await run(true)).toEqual(want)
    }
  })
})

