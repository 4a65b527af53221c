import { interpretProgram, runOrThrow, tensorOf } from '@tessera/core'
import { compareOutputs, describeConformance, toleranceFor } from '@tessera/core/testing'
import { expect, it } from 'vitest'
import { fastBackend, fastCaps } from '../src/index.js'
import { entropyProgram, values } from './loop-helpers.js'

// row chains compiled to one WebAssembly module, in a browser (headless Chromium, one thread)
it('a softmax entropy chain runs as one module and agrees with the reference', async () => {
  const n = 41, dim = 5, k = 13
  const p = entropyProgram(n, dim, k, true)
  const ins = [tensorOf(values(n * dim, 3), [n, dim]), tensorOf(values(k * dim, 4), [k, dim])]
  const b = fastBackend({ blockRows: 3 })
  const ex = b.compile(p)
  const chain = (ex as unknown as { plan: { steps: { kind: string; chain?: { codegen: string } }[] } }).plan.steps.find((s) => s.kind === 'rows')!.chain!
  expect(chain.codegen).toBe('wasm')
  ex.dispose()
  const got = await runOrThrow(p, ins, b)
  const want = interpretProgram(p, ins)
  const magnitude = interpretProgram(p, ins.map((t) => ({ ...t, data: (t.data as Float32Array).map(Math.abs) })))
  expect(compareOutputs(got, want, toleranceFor('accumulate', fastCaps), { strictNaN: true, magnitude })).toBeNull()
})

describeConformance('fast, row chains forced (browser)', async () => fastBackend({ blockRows: 2 }), { numRuns: 6 })
