import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import { smallKFits, smallKLayout, smallKModule, smallKRunnerFactory } from '../src/wasm/smallk.js'
import { entropyProgram, expectSameBits, f32, rowChainOf, values } from './loop-helpers.js'

const makeRunner = smallKRunnerFactory()

/** The reference's matmul of (m x k) @ (k x n). */
function referenceMatmul(a: number[], b: number[], m: number, k: number, n: number): Float32Array {
  const p = traceOrThrow([f32([m, k]), f32([k, n])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
  return interpretProgram(p, [tensorOf(a, [m, k]), tensorOf(b, [k, n])])[0]!.data as Float32Array
}

describe('WebAssembly small-k matmul (row chains: k <= 16, n a multiple of 4)', () => {
  test.prop(
    [fc.integer({ min: 1, max: 16 }), fc.integer({ min: 1, max: 10 }), fc.integer({ min: 1, max: 13 }), fc.integer({ min: 0, max: 1000 })],
    { numRuns: 60 },
  )('equals the reference bit for bit (odd and even row counts, every k)', (k, n4, m, seed) => {
    const n = 4 * n4
    // huge and tiny powers of two: large products cancel exactly, so the order of the float64
    // additions (and that they are float64 at all) shows in the float32 result
    const set = [2 ** 20, -(2 ** 20), 2 ** -20, -(2 ** -20), 1, -1.5, 0.1, -0]
    const rnd = (i: number) => set[Math.floor(Math.abs(Math.sin(i * 12.9898 + seed) * 43758.5453)) % set.length]!
    const a = Array.from({ length: m * k }, (_, i) => rnd(i))
    const b = Array.from({ length: k * n }, (_, i) => rnd(i + 1000))
    const L = smallKLayout(k, n, 16)
    const run = makeRunner(smallKModule(L), L)
    const out = new Float32Array(m * n)
    run.begin()
    run.run(new Float32Array(a), new Float32Array(b), out, m)
    const want = referenceMatmul(a, b, m, k, n)
    out.forEach((v, i) => {
      if (!Object.is(v, want[i])) expect.fail(`m=${m} k=${k} n=${n} element ${i}: ${v} vs ${want[i]}`)
    })
  })

  test('an output whose products are all -0 is +0, as the reference (float64 sums start at +0)', () => {
    const L = smallKLayout(2, 4, 2)
    const run = makeRunner(smallKModule(L), L)
    const out = new Float32Array(4)
    run.begin()
    run.run(new Float32Array([-0, 1]), new Float32Array([1, 1, 1, 1, -0, -0, -0, -0]), out, 1)
    expect(Array.from(out).every((v) => Object.is(v, 0))).toBe(true)
  })

  test('b is packed again after begin() (same array, new contents) and refused shapes are named', () => {
    const L = smallKLayout(1, 4, 1)
    const run = makeRunner(smallKModule(L), L)
    const b = new Float32Array([1, 2, 3, 4])
    const out = new Float32Array(4)
    run.begin()
    run.run(new Float32Array([2]), b, out, 1)
    expect(Array.from(out)).toEqual([2, 4, 6, 8])
    b.set([5, 6, 7, 8])
    run.begin()
    run.run(new Float32Array([1]), b, out, 1)
    expect(Array.from(out)).toEqual([5, 6, 7, 8])
    expect(() => run.run(new Float32Array(2), b, new Float32Array(8), 2)).toThrow(/2 rows, it holds 1/)
    expect(smallKFits(17, 8)).toBe(false)
    expect(smallKFits(10, 6)).toBe(false)
    expect(() => smallKLayout(10, 6, 4)).toThrow(/k <= 16 and n a multiple of 4 \(got k = 10, n = 6\)/)
  })

  test('a row chain with wasm uses the kernel for its matmul and gives the reference bits (worker threads running it: mathmap.test.ts)', async () => {
    const n = 300, dim = 5, k = 32
    const p = entropyProgram(n, dim, k, true)
    const ins = [tensorOf(values(n * dim, 3), [n, dim]), tensorOf(values(k * dim, 4), [k, dim])]
    const want = interpretProgram(p, ins)
    for (const threads of [1, 2]) {
      // the chain's members as JS kernels and this kernel (wasmChains: true compiles the whole chain instead: chain-wasm.test.ts)
      const ex = fastBackend({ wasm: true, wasmChains: false, threads, blockRows: 7 }).compile(p)
      const chain = rowChainOf(ex) as unknown as { desc: { steps: { kind: string; wasm?: unknown }[] } }
      expect(chain.desc.steps.filter((s) => s.kind === 'matmul' && s.wasm !== undefined)).toHaveLength(1)
      for (let call = 0; call < 3; call++) expectSameBits(await ex.run(ins), want, `threads ${threads} call ${call}`)
      ex.dispose()
      // without wasm the chain keeps the JS matmul
      const js = fastBackend({ wasm: false, threads, blockRows: 7 }).compile(p)
      const jsChain = rowChainOf(js) as unknown as { desc: { steps: { kind: string; wasm?: unknown }[] } }
      expect(jsChain.desc.steps.some((s) => s.kind === 'matmul' && s.wasm !== undefined)).toBe(false)
      js.dispose()
    }
  })

  test('new codebook contents between calls reach the kernel (b is repacked per call)', async () => {
    const n = 64, dim = 3, k = 8
    const p = entropyProgram(n, dim, k, false)
    const ex = fastBackend({ wasm: true, wasmChains: false, threads: 1, blockRows: 5 }).compile(p)
    for (const seed of [1, 2, 3]) {
      const ins = [tensorOf(values(n * dim, 9), [n, dim]), tensorOf(values(k * dim, seed), [k, dim])]
      expectSameBits(await ex.run(ins), interpretProgram(p, ins), `codebook seed ${seed}`)
    }
    ex.dispose()
  })
})
