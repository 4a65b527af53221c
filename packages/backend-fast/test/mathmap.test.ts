import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend } from '../src/index.js'
import { planProgram } from '../src/plan.js'
import { mathMapFactory, mathMapModule } from '../src/wasm/mathmap.js'
import { entropyProgram, expectSameBits, f32, rowChainOf, values } from './loop-helpers.js'

const F = Math.fround
/** Distance in float32 ulps (both finite, same sign). */
const ulps = (a: number, b: number) => {
  const i = new Int32Array(new Float32Array([a, b]).buffer)
  return Math.abs(i[0]! - i[1]!)
}

describe('WebAssembly exp map (float64 lanes, rounded once to float32)', () => {
  const map = mathMapFactory()(mathMapModule(1000))

  test('special values and the float32 overflow / underflow edges are the reference values', () => {
    const xs = [0, -0, NaN, Infinity, -Infinity, 1, -1, 88.72, 88.7228, 88.73, 88.8, 89, 1e3, -87.3, -103.2, -103.97, -103.98, -104, -110, -1e30, 1e-30, -1e-30, 3.4e38, -3.4e38]
    const src = new Float32Array(xs)
    const out = new Float32Array(xs.length)
    map('exp', src, out, xs.length)
    src.forEach((x, i) => {
      if (!Object.is(out[i], F(Math.exp(x)))) expect.fail(`exp(${x}): ${out[i]} vs ${F(Math.exp(x))}`)
    })
  })

  test.prop([fc.array(fc.float({ noNaN: false }), { minLength: 1, maxLength: 3000 })], { numRuns: 60 })(
    'any float32 inputs, any length (several chunks, odd tails): within one ulp of fround(Math.exp), equal almost always',
    (xs) => {
      const src = new Float32Array(xs)
      const out = new Float32Array(xs.length).fill(-7)
      map('exp', src, out, xs.length)
      src.forEach((x, i) => {
        const want = F(Math.exp(x))
        if (Object.is(out[i], want)) return
        // a one-ulp difference only where exp(x) is within ~1e-15 of a float32 rounding midpoint
        if (!(Number.isFinite(want) && want > 0 && ulps(out[i]!, want) === 1)) expect.fail(`exp(${x}): ${out[i]} vs ${want}`)
        const mid = (out[i]! + want) / 2
        expect(Math.abs(Math.exp(x) - mid) / mid).toBeLessThan(1e-13)
      })
    },
  )

  test('a million values in the softmax range equal fround(Math.exp) bit for bit', () => {
    const n = 1 << 20
    const src = new Float32Array(n)
    for (let i = 0; i < n; i++) src[i] = F(-120 + (i * 137.5) / n + Math.sin(i) * 1e-3)
    const out = new Float32Array(n)
    mathMapFactory()(mathMapModule(32768))('exp', src, out, n)
    let bad = 0
    src.forEach((x, i) => void (Object.is(out[i], F(Math.exp(x))) || bad++))
    expect(bad).toBe(0)
  })
})

describe('exp as a map step of the plan', () => {
  test('a large exp is a map step (its argument stored), small ones stay fused; without wasm never', () => {
    const big = traceOrThrow([f32([256, 256])], (x: Tensor) => [x.mul(3).exp().sum(-1)]).program
    expect(planProgram(big, { wasm: true, threads: 1 }).steps.filter((s) => s.kind === 'map')).toHaveLength(1)
    expect(planProgram(big, { wasm: false, threads: 1 }).steps.some((s) => s.kind === 'map')).toBe(false)
    const small = traceOrThrow([f32([64, 64])], (x: Tensor) => [x.mul(3).exp().sum(-1)]).program
    expect(planProgram(small, { wasm: true, threads: 1 }).steps.some((s) => s.kind === 'map')).toBe(false)
  })

  test('outside a chain: same bits as the reference (exp of a computed argument, read by two loops)', async () => {
    const p = traceOrThrow([f32([300, 300])], (x: Tensor) => {
      const e = x.mul(7).sub(2).exp()
      return [e.sum(-1), e.max(0), e]
    }).program
    const ins = [tensorOf(values(300 * 300, 5).map((v) => v * 20), [300, 300])]
    const ex = fastBackend({ wasm: true, threads: 1 }).compile(p)
    expectSameBits(await ex.run(ins), interpretProgram(p, ins), 'map outside a chain')
    ex.dispose()
  })

  test('inside a row chain (softmax entropy), on 1 and 2 threads: the reference bits, calls after calls', async () => {
    const n = 1024, dim = 6, k = 128
    const p = entropyProgram(n, dim, k, true)
    const ins = [tensorOf(values(n * dim, 11), [n, dim]), tensorOf(values(k * dim, 12), [k, dim])]
    const want = interpretProgram(p, ins)
    for (const threads of [1, 2]) {
      const ex = fastBackend({ wasm: true, threads, blockRows: 9 }).compile(p)
      const chain = rowChainOf(ex) as unknown as { desc: { steps: { kind: string }[] } }
      expect(chain.desc.steps.filter((s) => s.kind === 'map')).toHaveLength(1)
      for (let call = 0; call < 3; call++) expectSameBits(await ex.run(ins), want, `threads ${threads} call ${call}`)
      ex.dispose()
    }
  })
})
