import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

describe('matmul', () => {
  // covers the register-tiled path (odd rows, columns not a multiple of 4, batches) and the row-streaming one
  test.prop(
    [
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 1, max: 7 }),
      fc.integer({ min: 1, max: 9 }),
      fc.integer({ min: 1, max: 11 }),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    ],
    { numRuns: 60 },
  )('batched matmul equals the reference bit for bit', async (batch, m, k, n, seed) => {
    let s = seed
    const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), (s / 2 ** 32) * 8 - 4)
    const p = traceOrThrow([f32([batch, m, k]), f32([batch, k, n])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
    const ins = [
      tensorOf(Array.from({ length: batch * m * k }, rnd), [batch, m, k]),
      tensorOf(Array.from({ length: batch * k * n }, rnd), [batch, k, n]),
    ]
    const want = interpretProgram(p, ins)[0]!
    const got = (await runOrThrow(p, ins, fastBackend({ wasm: false })))[0]!
    expect(Array.from(got.data)).toEqual(Array.from(want.data))
  })

  // m = 3: rows one at a time; m = 9 and 2 batches: two 4-row tiles and a leftover row each
  test.each([[1, 3], [2, 9]])('a B too large for the tiled loop (k*n > 65536) also equals the reference (batch %i, m %i)', async (batch, m) => {
    const [k, n] = [300, 260]
    const p = traceOrThrow([f32([batch, m, k]), f32([batch, k, n])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
    const ins = [
      tensorOf(Array.from({ length: batch * m * k }, (_, i) => Math.sin(i) * 3), [batch, m, k]),
      tensorOf(Array.from({ length: batch * k * n }, (_, i) => Math.cos(i * 0.7)), [batch, k, n]),
    ]
    const want = interpretProgram(p, ins)[0]!
    const got = (await runOrThrow(p, ins, fastBackend({ wasm: false })))[0]!
    expect(Array.from(got.data)).toEqual(Array.from(want.data))
  })
})
