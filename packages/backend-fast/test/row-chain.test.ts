import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { entropyProgram, expectBlockedEntropySameBits, expectSameBits, f32, rowChainOf, runUntilShared, values } from './loop-helpers.js'


describe('row-blocked chains', () => {
  test('the entropy program forms one chain whose intermediates are block-sized', () => {
    const plan = planProgram(entropyProgram(50, 3, 8, true), { wasm: false, threads: 1, blockRows: 7 })
    const rows = plan.steps.filter((s) => s.kind === 'rows')
    expect(rows.length).toBe(1)
    const chain = rows[0]!.kind === 'rows' ? rows[0]!.chain : undefined
    expect(chain!.rows).toBe(7)
    expect(chain!.steps.map((s) => s.kind)).toContain('matmul')
    expect(chain!.localSlots.length).toBeGreaterThanOrEqual(3) // logits, exp, row sums at least
    // without blockRows, a small program is planned as before: no chain
    expect(planProgram(entropyProgram(50, 3, 8, true), { wasm: false, threads: 1 }).steps.some((s) => s.kind === 'rows')).toBe(false)
  })

  test.prop([fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 0, max: 1000 })], { numRuns: 40 })(
    'blocked runs give the same bits as unblocked ones, for block sizes that do not divide the rows',
    (n, rows, seed) => expectBlockedEntropySameBits(n, rows, seed, true),
  )

  test.prop([fc.integer({ min: 1, max: 23 }), fc.integer({ min: 1, max: 6 }), fc.array(fc.float({ min: -3, max: 3, noNaN: true }), { minLength: 23 * 12, maxLength: 23 * 12 })], { numRuns: 40 })(
    'mixed row programs (side outputs, column and scalar sums, int sums, values used after the chain) equal the reference',
    async (n, rows, xs) => {
      const p = traceOrThrow([f32([n, 4, 3]), f32([3])], (x: Tensor, w: Tensor) => {
        const y = x.mul(w).add(1).square()
        const rowSum = y.sum(-1) // [n, 4]
        const colSum = y.sum(0) // [4, 3]: a sink
        const all = rowSum.sum() // scalar sink over rows
        const bits = x.gt(0).cast('int32').sum([0, 1]) // int sink over two leading axes
        const t = y.div(rowSum.reshape([n, 4, 1]).broadcastTo([n, 4, 3])) // read after the row sum
        const later = t.sum(0).mul(all) // uses a sink output after the chain
        return [rowSum.max(-1), colSum, all, bits, later, t.transpose([0, 2, 1])]
      }).program
      const ins = [tensorOf(xs.slice(0, n * 12), [n, 4, 3]), tensorOf([0.5, -1, 2], [3])]
      const want = interpretProgram(p, ins)
      const got = await runOrThrow(p, ins, fastBackend({ wasm: false, blockRows: rows }))
      expectSameBits(got, want, `n=${n} rows=${rows}`)
      const plan = planProgram(p, { wasm: false, threads: 1, blockRows: rows })
      // (with one row, the largest value is a [4, 3] column sum: its leading axis is not the rows)
      if (n > 1) expect(plan.steps.some((s) => s.kind === 'rows')).toBe(true)
    },
  )

  test('a value whose row i depends on other rows (iota along rows, a transpose of the row axis) stays out of the chain and results hold', async () => {
    const n = 9
    const p = traceOrThrow([f32([n, n])], (x: Tensor) => {
      const e = x.exp()
      const s = e.sum(-1, true)
      const mixed = e.transpose().add(s.broadcastTo([n, n])) // row i of e^T needs column i of e
      const byRow = e.add(x.builder.iota([n, n], 0, 'float32')) // the row number itself
      return [mixed.sum(-1), e.div(s).sum(0), byRow.sum(-1)]
    }).program
    const ins = [tensorOf(values(n * n, 3), [n, n])]
    const want = interpretProgram(p, ins)
    for (const rows of [1, 2, 4, 9]) {
      const got = await runOrThrow(p, ins, fastBackend({ wasm: false, blockRows: rows }))
      // exp may differ from the reference by one ulp (transcendentalRtol); compare with the unblocked plan
      const plain = await runOrThrow(p, ins, fastBackend({ wasm: false }))
      expectSameBits(got, plain, `rows=${rows}`)
      got.forEach((g, i) => Array.from(g.data).forEach((v, j) => expect(v).toBeCloseTo(Number(want[i]!.data[j]), 4)))
    }
  })
})

describe('row chains on worker threads', () => {
  test('a heavy chain shared with a worker gives the same bits as one thread, and the worker takes blocks', async () => {
    const n = 4096, d = 64
    const p = traceOrThrow([f32([n, d])], (x: Tensor) => {
      const e = x.mul(3).exp()
      const s = e.sum(-1, true)
      const prob = e.div(s)
      return [prob.mul(prob.maximum(1e-5).log()).sum(-1), prob.sum(0), x.tanh().round()]
    }).program
    const ins = [tensorOf(values(n * d, 5), [n, d])]
    const one = await runOrThrow(p, ins, fastBackend({ wasm: false, threads: 1 }))
    const be = fastBackend({ wasm: false, threads: 2 })
    const ex = be.compile(p)
    expect(rowChainOf(ex).threads).toBe(2)
    // the first call runs on the calling thread alone and starts no worker (LateWorkers); the workers start after it
    expectSameBits(await ex.run(ins), one, 'first call')
    const chain = rowChainOf(ex)
    expect(chain.callerBlocks).toBe(Math.ceil(chain.n / chain.rows))
    expect(chain.workersStarted).toBe(false)
    const shared = await runUntilShared(ex, ins, one)
    ex.dispose()
    expect(shared).toBe(true)
  })
})
