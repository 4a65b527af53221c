import fc from 'fast-check'
import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import { combineRanks, tensorOf } from '../src/index.js'
import { meshHandles, runRanks } from '../src/worker-threads/index.js'

const boot = new URL('./fixtures/tsx-worker.mjs', import.meta.url)
const module = new URL('./fixtures/rank-allreduce.ts', import.meta.url).href

describe('worker-threads collective', () => {
  for (const size of [2, 4])
    test(`${size} worker threads: every rank gets the rank-order reduction, bit-identical`, async () => {
      // rounds of random lengths and values; rank r contributes rounds[k][r]
      const rounds = fc.sample(
        fc.integer({ min: 0, max: 6 }).chain((n) =>
          fc.array(fc.array(fc.float({ min: -1e6, max: 1e6, noNaN: true, noDefaultInfinity: true }), { minLength: n, maxLength: n }), { minLength: size, maxLength: size }),
        ),
        { numRuns: 5, seed: size },
      )
      const got = await runRanks<unknown, number[][][]>(size, boot, { module, rounds }, { timeoutMs: 60_000 })
      if (E.isLeft(got)) throw got.left
      expect(got.right.length).toBe(size)
      rounds.forEach((round, k) => {
        const parts = round.map((v) => tensorOf(v, [v.length]))
        const sum = Array.from(combineRanks(parts, 'sum').data)
        const mean = Array.from(combineRanks(parts, 'mean').data)
        for (const perRank of got.right) expect(perRank[k]).toEqual([sum, sum, mean])
      })
    })

  test('a failing rank stops every rank and the Left names it', async () => {
    const rounds = [[[1], [2], [3]]]
    const got = await runRanks(3, boot, { module, rounds, failRank: 1 }, { timeoutMs: 60_000 })
    expect(E.isLeft(got) && got.left.where).toBe('rank 1')
    expect(E.isLeft(got) && got.left.message).toContain('fails on purpose')
  })

  test('bad sizes are refused by name', async () => {
    expect(() => meshHandles(0)).toThrow(/meshHandles: size must be a positive integer/)
    const r = await runRanks(1.5, boot, {})
    expect(E.isLeft(r) && r.left.message).toContain('size must be a positive integer')
  })
})
