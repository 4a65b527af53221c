import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Backend, HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { compareOutputs, describeConformance, toleranceFor } from '@tessera/core/testing'
import { describe, expect } from 'vitest'
import { fastBackend, fastCaps } from '../src/index.js'
import { entropyProgram, expectSameBits, f32, rowChainOf, runUntilShared, values } from './loop-helpers.js'

/**
 * Row chains compiled to one WebAssembly module (wasm/chain-codegen.ts) against the reference
 * interpreter: within the backend's tolerances (float32 matmul, float64 sums in lanes, exp and
 * log within an ulp), NaN and infinities exactly, results independent of the thread count.
 */

const codegenOf = (b: Backend, p: Program) => {
  const ex = b.compile(p)
  const chain = rowChainOf(ex) as unknown as { codegen: string }
  const kind = chain.codegen
  ex.dispose()
  return kind
}

/** Outputs within the accumulate tolerance (terms' magnitudes from the reference on |inputs|), NaN and Inf exactly. */
function expectClose(p: Program, ins: HostTensor[], got: HostTensor[], what: string): void {
  const want = interpretProgram(p, ins)
  const abs = ins.map((t) => ({ ...t, data: (t.data as Float32Array).map(Math.abs) }) as HostTensor)
  const magnitude = interpretProgram(p, abs)
  // where a term is infinite (-Inf logits) the magnitude run gives Inf or NaN: bound by the result there
  const acc = toleranceFor('accumulate', fastCaps)
  const bad = compareOutputs(got, want, (w, m) => acc(w, Number.isFinite(m) ? m : w), { strictNaN: true, magnitude })
  if (bad) expect.fail(`${what}: ${bad.message}`)
}

// every primitive case and random program with chains forced on (blocks of 2 rows): chains the
// module can run take it, the rest keep the JS kernels
describeConformance('backend-fast (wasm row chains, blocks of 2 rows)', async () => fastBackend({ threads: 1, blockRows: 2 }), { reference: interpretProgram, numRuns: 20 })

describe('row chains as one WebAssembly module', () => {
  test.prop(
    // n > dim: core forms the chain over the leading axis of the largest value (the logits)
    [fc.integer({ min: 13, max: 70 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 2, max: 37 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 2 }), fc.integer({ min: 0, max: 999 })],
    { numRuns: 40 },
  )('softmax entropy of odd sizes (rows, dims, codes not multiples of 4) on 1 and 2 threads: the reference within tolerance', async (n, dim, k, rows, threads, seed) => {
    const p = entropyProgram(n, dim, k, true)
    const ins = [tensorOf(values(n * dim, seed), [n, dim]), tensorOf(values(k * dim, seed + 1), [k, dim])]
    const b = fastBackend({ threads, blockRows: rows })
    expect(codegenOf(b, p)).toBe('wasm')
    expectClose(p, ins, await runOrThrow(p, ins, b), `n=${n} dim=${dim} k=${k} rows=${rows} threads=${threads}`)
    await b.dispose!()
  })

  test.prop([fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 19 }), fc.integer({ min: 0, max: 999 })], { numRuns: 40 })(
    'every op the module computes, -Inf logits, whole rows of -Inf (NaN probabilities), row outputs of odd width',
    async (n, w, seed) => {
      const p = traceOrThrow([f32([n, w]), f32([w])], (x: Tensor, bias: Tensor) => {
        const z = x.mul(3).add(bias)
        const m = z.max(-1, true)
        const e = z.sub(m).exp()
        const prob = e.div(e.sum(-1, true))
        const lp = prob.maximum(1e-5).log()
        const misc = x.abs().sqrt().add(x.neg().floor()).sub(x.mul(2.5).round()).add(x.minimum(0.25)).mul(x.add(3).recip())
        const mixed = x.maximum(bias).add(x.minimum(bias.mul(-1)))
        return [prob, prob.mul(lp).sum(-1), prob.sum(0), e.sum([0, 1]), misc, x.min(-1), mixed.sum(-1), z.log().sum(0)]
      }).program
      const xs = values(n * w, seed).map((v, i) => ((i * 7 + seed) % 11 === 0 ? -Infinity : v))
      // every third row entirely -Inf: its max is -Inf, -Inf - -Inf is NaN, as in the reference
      for (let r = 0; r < n; r += 3) if ((r + seed) % 2 === 0) for (let j = 0; j < w; j++) xs[r * w + j] = -Infinity
      const ins = [tensorOf(xs, [n, w]), tensorOf(values(w, seed + 5), [w])]
      for (const threads of [1, 2]) {
        const b = fastBackend({ threads, blockRows: 1 + (seed % 5) })
        expect(codegenOf(b, p)).toBe('wasm')
        expectClose(p, ins, await runOrThrow(p, ins, b), `n=${n} w=${w} threads=${threads}`)
        await b.dispose!()
      }
    },
  )

  test('the same bits on 1 and 2 threads (blocks fixed by the row count), worker threads taking blocks, calls after calls', async () => {
    // 4096 x 128 logits: heavy enough for the chain to take a worker thread (2^18 elements)
    const n = 4096, dim = 6, k = 128
    const p = entropyProgram(n, dim, k, true)
    const ins = [tensorOf(values(n * dim, 11), [n, dim]), tensorOf(values(k * dim, 12), [k, dim])]
    const one = fastBackend({ threads: 1, blockRows: 64 }).compile(p)
    expect((rowChainOf(one) as unknown as { codegen: string }).codegen).toBe('wasm')
    const want = await one.run(ins)
    expectClose(p, ins, want, 'one thread')
    const two = fastBackend({ threads: 2, blockRows: 64 }).compile(p)
    expect(rowChainOf(two).threads).toBe(2)
    expect(await runUntilShared(two, ins, want)).toBe(true)
    for (let call = 0; call < 3; call++) expectSameBits(await two.run(ins), want, `call ${call}`)
    one.dispose()
    two.dispose()
  })

  test('new inputs between calls reach the module (the matmul operand is repacked per call)', async () => {
    const n = 64, dim = 3, k = 9
    const p = entropyProgram(n, dim, k, false)
    const b = fastBackend({ threads: 1, blockRows: 5 })
    const ex = b.compile(p)
    for (const seed of [1, 2, 3]) {
      const ins = [tensorOf(values(n * dim, seed + 20), [n, dim]), tensorOf(values(k * dim, seed), [k, dim])]
      expectClose(p, ins, await ex.run(ins), `seed ${seed}`)
    }
    ex.dispose()
  })

  test('a chain with an op the module has no form for keeps the JS kernels (and wasmChains: false keeps them always)', async () => {
    const p = traceOrThrow([f32([20, 8])], (x: Tensor) => [x.tanh().sum(-1), x.exp().sum(0)]).program
    expect(codegenOf(fastBackend({ threads: 1, blockRows: 3 }), p)).toBe('js')
    const q = entropyProgram(20, 3, 8, false)
    expect(codegenOf(fastBackend({ threads: 1, blockRows: 3 }), q)).toBe('wasm')
    expect(codegenOf(fastBackend({ threads: 1, blockRows: 3, wasmChains: false }), q)).toBe('js')
    expect(codegenOf(fastBackend({ wasm: false, blockRows: 3 }), q)).toBe('js')
  })
})
