import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect, test } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { runWithWorkers } from './loop-helpers.js'

/**
 * The kernel does a staged chunk of rows in several calls over column ranges (so later calls run
 * V8's optimized code): sizes here make a chunk take several calls, the last one over fewer column
 * chunks, with a column tail (k % 16), row tails and NaN, infinite and tied distances; the indices
 * must be the reference's and the same on 1, 2 and 3 threads.
 */
const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

function nearest(n: number, d: number, k: number): Program {
  return traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => {
    const dist = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1))
    return [dist.argmin(-1)]
  }).program
}

/** Values on a 1/8 grid in [-2, 2]: every dot product and norm is exact in float32, so ties are real ties. */
function grid(len: number, seed: number): number[] {
  let s = seed
  return Array.from({ length: len }, () => {
    s = (s * 1103515245 + 12345) % 2147483648
    return (Math.floor((s / 2147483648) * 33) - 16) / 8
  })
}

describe('nearest-code kernel in several calls per chunk', () => {
  // 1501 rows of 64 against 300 codes (19 column chunks of 16): a 1024-row chunk takes calls
  // over 1, 2, 4, 8 and the last 4 column chunks, the last of which holds the 12 codes of the tail
  const n = 1501, d = 64, k = 300
  const x = grid(n * d, 11)
  const c = grid(k * d, 12)
  // duplicate codes: every row that picks one of them must get the first
  for (let j = 0; j < d; j++) {
    c[250 * d + j] = c[17 * d + j]!
    c[299 * d + j] = c[40 * d + j]!
  }
  // a row equal to code 17 (and 250): distance 0, a tie across calls
  for (let j = 0; j < d; j++) x[3 * d + j] = c[17 * d + j]!
  x[5 * d + 7] = NaN // a NaN row: every distance NaN, index 0
  x[1400 * d] = Infinity // |x|^2 = +Inf: distances are +Inf (codes with c0 < 0) or NaN (c0 >= 0)
  const firstNaN = (cb: number[]) => Array.from({ length: k }, (_, j) => cb[j * d]!).findIndex((v) => v >= 0)
  c[123 * d + 9] = NaN // a NaN code: every row's distance to it is NaN, so it wins there
  const ins: HostTensor[] = [tensorOf(x, [n, d]), tensorOf(c, [k, d])]

  test('indices equal the reference exactly, on 1, 2 and 3 threads', async () => {
    const p = nearest(n, d, k)
    expect(planProgram(p, { wasm: true, threads: 1 }).steps.map((s) => s.kind)).toContain('nearest')
    const want = Array.from(interpretProgram(p, ins)[0]!.data)
    expect(want[5]).toBe(0)
    expect(want[1400]).toBe(Math.min(firstNaN(c), 123))
    expect(want.filter((v) => v === 123).length).toBe(n - 2) // all rows but 5 and 1400
    for (const threads of [1, 2, 3]) {
      const backend = fastBackend({ threads, relaxedSimd: false })
      const exe = backend.compile(p)
      // a second call reuses the staged state memory: it must start from a fresh state
      expect(Array.from((await runWithWorkers(exe, ins, threads))[0]!.data)).toEqual(want)
      for (let call = 0; call < 2; call++) expect(Array.from((await exe.run(ins))[0]!.data)).toEqual(want)
      await backend.dispose?.()
    }
  })

  test('without NaN codes: ties and infinities across calls give the reference indices', async () => {
    const c2 = c.slice()
    c2[123 * d + 9] = 0
    const ins2: HostTensor[] = [ins[0]!, tensorOf(c2, [k, d])]
    const p = nearest(n, d, k)
    const want = Array.from(interpretProgram(p, ins2)[0]!.data)
    expect(want[3]).toBe(17)
    expect(want[5]).toBe(0)
    expect(want[1400]).toBe(firstNaN(c2))
    expect(firstNaN(c2)).toBeGreaterThan(0)
    expect(new Set(want).size).toBeGreaterThan(50)
    expect(want).not.toContain(250)
    expect(want).not.toContain(299)
    for (const threads of [1, 2]) {
      const backend = fastBackend({ threads, relaxedSimd: false })
      expect(Array.from((await runWithWorkers(backend.compile(p), ins2, threads))[0]!.data)).toEqual(want)
      await backend.dispose?.()
    }
  })

  test('a codebook packed in several slices (256-wide rows: 256 codes a slice, 44 in the last) gives the reference indices', async () => {
    // B = cb.mT of a stored codebook is packed in wasm from the codebook's rows, a slice at a time
    const n2 = 203, d2 = 256, k2 = 300
    const x2 = grid(n2 * d2, 21), c2 = grid(k2 * d2, 22)
    for (let j = 0; j < d2; j++) c2[290 * d2 + j] = c2[260 * d2 + j]! // a tie across slices
    for (let j = 0; j < d2; j++) x2[9 * d2 + j] = c2[260 * d2 + j]!
    const p = nearest(n2, d2, k2)
    const ins2: HostTensor[] = [tensorOf(x2, [n2, d2]), tensorOf(c2, [k2, d2])]
    const want = Array.from(interpretProgram(p, ins2)[0]!.data)
    expect(want[9]).toBe(260)
    expect(new Set(want).size).toBeGreaterThan(20)
    for (const threads of [1, 2]) {
      const backend = fastBackend({ threads, relaxedSimd: false })
      expect(Array.from((await runWithWorkers(backend.compile(p), ins2, threads))[0]!.data)).toEqual(want)
      await backend.dispose?.()
    }
  })

  test('the codebook is packed from its stored rows for cb.mT and its reshape, by the JS loop otherwise', () => {
    const packs = (p: Program) => {
      const st = planProgram(p, { wasm: true, threads: 1 }).steps.find((s) => s.kind === 'nearest')
      return st?.kind === 'nearest' ? st.step.packsStoredRows : undefined
    }
    expect(packs(nearest(10, 3, 5))).toBe(true)
    const reshaped = traceOrThrow([f32([10, 3]), f32([5, 3])], (x: Tensor, cb: Tensor) => [
      x.reshape([1, 10, 3]).matmul(cb.reshape([1, 5, 3]).mT).neg().argmin(-1),
    ]).program
    expect(packs(reshaped)).toBe(true)
    const scaled = traceOrThrow([f32([10, 3]), f32([5, 3])], (x: Tensor, cb: Tensor) => [x.matmul(cb.mul(0.5).mT).neg().argmin(-1)]).program
    expect(packs(scaled)).toBe(false)
    const stored = traceOrThrow([f32([10, 3]), f32([3, 5])], (x: Tensor, cbT: Tensor) => [x.matmul(cbT).neg().argmin(-1)]).program
    expect(packs(stored)).toBe(false)
  })
})
