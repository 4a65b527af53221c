import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

describe('fusion', () => {
  test('an elementwise chain with broadcasts and a transpose is one loop', () => {
    const p = traceOrThrow([f32([4, 3]), f32([3])], (x: Tensor, b: Tensor) => [x.add(b).tanh().mul(2).round().transpose()]).program
    const steps = planProgram(p, { wasm: true, threads: 1 }).steps
    expect(steps.map((s) => s.kind)).toEqual(['kernel'])
  })

  test('a reduction absorbs its elementwise prologue: sum of squares is one loop', () => {
    const p = traceOrThrow([f32([5, 7])], (x: Tensor) => [x.square().sum(-1)]).program
    expect(planProgram(p, { wasm: false, threads: 1 }).steps.length).toBe(1)
  })

  test('distances returned and selected from (VectorQuantize) are computed once: the argmax reads the returned buffer', async () => {
    const p = traceOrThrow([f32([6, 3]), f32([4, 3])], (x: Tensor, c: Tensor) => {
      const d = x.square().sum(-1, true).add(c.square().sum(-1)).sub(x.matmul(c.mT).mul(2)).maximum(1e-8).sqrt().neg()
      return [d.argmax(-1), d.reshape([2, 3, 4])]
    }).program
    const steps = planProgram(p, { wasm: true, threads: 1 }).steps
    const sources = steps.flatMap((s) => (s.kind === 'kernel' ? [s.kernel.source] : []))
    expect(sources.filter((src) => src.includes('Math.sqrt'))).toHaveLength(1)
    const ins = [tensorOf(Array.from({ length: 18 }, (_, i) => Math.sin(i) * 2), [6, 3]), tensorOf(Array.from({ length: 12 }, (_, i) => Math.cos(i * 3)), [4, 3])]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((t, i) => expect(Array.from(t.data)).toEqual(Array.from(want[i]!.data)))
  })

  test('a value read through an expanding broadcast is stored once, not recomputed per copy', () => {
    const p = traceOrThrow([f32([6])], (x: Tensor) => [x.exp().reshape([6, 1]).broadcastTo([6, 50]).add(1)]).program
    const steps = planProgram(p, { wasm: false, threads: 1 }).steps
    expect(steps.length).toBe(2)
  })

  test.prop([fc.array(fc.integer({ min: -8, max: 8 }).map((v) => v / 4), { minLength: 12, maxLength: 12 })])(
    'an output of the reduced operand\'s shape is written by the reduction\'s loop (one pass), exactly',
    async (xs) => {
      const p = traceOrThrow([f32([3, 4])], (x: Tensor) => {
        const pos = x.gt(0)
        const q = pos.cast('float32').mul(2).sub(1)
        const idx = pos.cast('int32').mul(x.builder.constant([8, 4, 2, 1], [4], 'int32')).sum(-1)
        return [q, idx, x.tanh().round()]
      }).program
      const kinds = planProgram(p, { wasm: false, threads: 1 }).steps.map((s) => s.kind)
      expect(kinds.filter((k) => k === 'kernel').length).toBe(2) // q fused into the sum; tanh().round() is its own loop
      const ins = [tensorOf(xs, [3, 4])]
      const want = interpretProgram(p, ins)
      const got = await runOrThrow(p, ins, fastBackend())
      got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
    },
  )

  // round half to even on exact halves, and the generated loops equal the reference bit for bit
  test.prop([fc.array(fc.integer({ min: -64, max: 64 }).map((v) => v / 4), { minLength: 1, maxLength: 40 })])(
    'FSQ-like chain equals the reference bit for bit',
    async (xs) => {
      const n = xs.length
      const p = traceOrThrow([f32([n])], (x: Tensor) => [x.mul(1.5).round().div(3), x.round(), x.gt(0).cast('int32').sum()]).program
      const ins = [tensorOf(xs, [n])]
      const want = interpretProgram(p, ins)
      const got = await runOrThrow(p, ins, fastBackend())
      got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
    },
  )
  // the column-sum loop walks rows outermost; sums must still equal the reference's bit for bit
  test.prop([
    fc.integer({ min: 1, max: 5 }),
    fc.integer({ min: 1, max: 4 }),
    fc.array(fc.float({ min: -1e3, max: 1e3, noNaN: true }), { minLength: 60, maxLength: 60 }),
  ])('sums over leading axes (column sums) equal the reference bit for bit', async (a, b, xs) => {
    const p = traceOrThrow([f32([a, b, 3])], (x: Tensor) => [
      x.exp().sum(0),
      x.mul(3).sum([0, 1]),
      x.cast('int32').sum(0),
    ]).program
    const ins = [tensorOf(xs.slice(0, a * b * 3), [a, b, 3])]
    const want = interpretProgram(p, ins)
    for (const wasm of [false, true]) {
      const got = await runOrThrow(p, ins, fastBackend({ wasm, threads: 1 }))
      got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
    }
  })
  // the inlined max/min keep the reference's NaN propagation and its choice between +0 and -0
  test.prop([fc.array(fc.constantFrom(NaN, 0, -0, 1, -1, Infinity, -Infinity, 2.5), { minLength: 12, maxLength: 12 })])(
    'max and min over rows with NaN, +0/-0 and infinities equal the reference bit for bit',
    async (xs) => {
      const p = traceOrThrow([f32([3, 4])], (x: Tensor) => [x.max(-1), x.min(-1), x.mul(2).max(0), x.neg().min()]).program
      const ins = [tensorOf(xs, [3, 4])]
      const want = interpretProgram(p, ins)
      const got = await runOrThrow(p, ins, fastBackend({ wasm: false }))
      got.forEach((g, i) => Array.from(g.data).forEach((v, j) => expect(Object.is(v, want[i]!.data[j])).toBe(true)))
    },
  )
})
