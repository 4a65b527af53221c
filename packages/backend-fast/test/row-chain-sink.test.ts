import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { entropyProgram, expectBlockedEntropySameBits, expectSameBits, f32, rowChainOf, runUntilShared, values } from './loop-helpers.js'


describe('a value summed over rows and read elsewhere is stored once', () => {
  test('the probabilities are a side output of the entropy loop; the column sum only adds them', () => {
    const plan = planProgram(entropyProgram(50, 3, 8, false), { wasm: false, threads: 1, blockRows: 7 })
    const chain = plan.steps.flatMap((s) => (s.kind === 'rows' ? [s.chain] : []))[0]!
    expect(chain).toBeDefined()
    const kernels = chain.steps.flatMap((s) => (s.kind === 'kernel' ? [s] : []))
    // the loop computing the per-row entropy also writes the probabilities
    const writer = kernels.find((s) => (s.sideOuts ?? []).length > 0 && /\bLOG\(/.test(s.kernel.source))
    expect(writer).toBeDefined()
    const probSlot = writer!.sideOuts![0]!
    // the column sum reads that slot and divides nothing
    const colSum = kernels.find((s) => s.prim === 'reduce_sum' && s.kernel.source.includes(`const b${probSlot} = B[${probSlot}];`) && s !== writer)
    expect(colSum).toBeDefined()
    expect(colSum!.kernel.source).not.toMatch(/ \/ /)
    // block-sized: the probabilities never exist in full
    expect(chain.localSlots).toContain(probSlot)
  })

  test.prop([fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 1000 })], { numRuns: 40 })(
    'blocked runs of the entropy program give the same bits as unblocked ones',
    (n, rows, seed) => expectBlockedEntropySameBits(n, rows, seed, false),
  )

  test.prop([fc.integer({ min: 1, max: 17 }), fc.integer({ min: 1, max: 5 }), fc.array(fc.float({ min: -3, max: 3, noNaN: true }), { minLength: 17 * 6, maxLength: 17 * 6 })], { numRuns: 50 })(
    'a summed-over-rows value read before, after, transposed and elementwise equals the reference bit for bit',
    async (n, rows, xs) => {
      const p = traceOrThrow([f32([n, 6])], (x: Tensor) => {
        const t = x.div(x.abs().add(1)) // computed, read by several loops and summed over rows
        const early = t.max(-1) // reads t before the row sum of t.mul(x)
        const ent = t.mul(x).sum(-1)
        const col = t.sum(0)
        const moved = t.mT.sum(-1) // t through a transpose
        return [early, ent, col, moved, t.add(col.broadcastTo([n, 6]))]
      }).program
      const ins = [tensorOf(xs.slice(0, n * 6), [n, 6])]
      const want = interpretProgram(p, ins)
      expectSameBits(await runOrThrow(p, ins, fastBackend({ wasm: false, blockRows: rows })), want, `n=${n} rows=${rows} blocked`)
      expectSameBits(await runOrThrow(p, ins, fastBackend({ wasm: false })), want, `n=${n} unblocked`)
    },
  )
})

describe('row chains with sinks on several threads', () => {
  test('blocks queued for the sink ticket (many small blocks, 3 threads) give the same bits as one thread', async () => {
    const n = 4096, d = 64
    const p = traceOrThrow([f32([n, d])], (x: Tensor) => {
      const e = x.mul(3).exp()
      const prob = e.div(e.sum(-1, true))
      return [prob.mul(prob.maximum(1e-5).log()).sum(-1), prob.sum(0), e.sum([0, 1])]
    }).program
    const ins = [tensorOf(values(n * d, 7), [n, d])]
    const one = await runOrThrow(p, ins, fastBackend({ wasm: false, threads: 1, blockRows: 5 }))
    expectSameBits(one, await runOrThrow(p, ins, fastBackend({ wasm: false, threads: 1 })), 'blockRows 5 vs default')
    const ex = fastBackend({ wasm: false, threads: 3, blockRows: 5 }).compile(p)
    expect(rowChainOf(ex).threads).toBe(3)
    const shared = await runUntilShared(ex, ins, one)
    for (let i = 0; i < 3; i++) expectSameBits(await ex.run(ins), one, `shared call ${i}`)
    ex.dispose()
    expect(shared).toBe(true)
  })
})
