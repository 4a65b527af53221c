import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import { matmulF64 } from '../src/matmul.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

describe('matmul with a small inner dimension (k <= 16: generated loop, B transposed to float64)', () => {
  test.prop(
    [fc.integer({ min: 1, max: 2 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 16 }), fc.integer({ min: 1, max: 13 }), fc.integer({ min: 0, max: 1000 })],
    { numRuns: 80 },
  )('equals the reference bit for bit (odd row counts, any n, k = 0 included)', async (batch, m, k, n, seed) => {
    // huge and tiny powers of two: large products cancel exactly, so whether a tiny one was
    // absorbed before the cancellation (the order of the float64 additions) shows in float32
    const set = [2 ** 20, -(2 ** 20), 2 ** -20, -(2 ** -20), 1, -1.5, 0.1]
    const rnd = (i: number) => set[Math.floor(Math.abs(Math.sin(i * 12.9898 + seed) * 43758.5453)) % set.length]!
    const p = traceOrThrow([f32([batch, m, k]), f32([batch, k, n])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
    const ins = [
      tensorOf(Array.from({ length: batch * m * k }, (_, i) => rnd(i)), [batch, m, k]),
      tensorOf(Array.from({ length: batch * k * n }, (_, i) => rnd(i + 1000)), [batch, k, n]),
    ]
    const want = interpretProgram(p, ins)[0]!
    const got = (await runOrThrow(p, ins, fastBackend({ wasm: false })))[0]!
    Array.from(got.data).forEach((v, i) => {
      if (!Object.is(v, want.data[i])) expect.fail(`element ${i}: ${v} vs ${want.data[i]}`)
    })
  })

  test('an output whose products are all -0 has the reference sign (its float64 sum starts at 0)', () => {
    const a = [-0, 1, -0, -0], b = [1, -0, 1, 1]
    const out = new Float32Array(4)
    matmulF64(new Float32Array(a), new Float32Array(b), out, 1, 2, 2, 2)
    const p = traceOrThrow([f32([2, 2]), f32([2, 2])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
    const want = interpretProgram(p, [tensorOf(a, [2, 2]), tensorOf(b, [2, 2])])[0]!
    Array.from(out).forEach((v, i) => expect(Object.is(v, want.data[i])).toBe(true))
    // row 1, column 0: (-0)(1) + (-0)(1)
    expect(Object.is(out[2], 0)).toBe(true)
  })
})
