import fc from 'fast-check'
import * as E from 'fp-ts/lib/Either.js'
import { expect, test } from 'vitest'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { localCollectives, runCollective, tensorOf, traceOrThrow } from '@tessera/core'
import { sampleRows } from '../src/vq/sampling.js'
import { gatherRows, localRowIndex, sampleRowsSynced } from '../src/vq/sync.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'

/**
 * The synced row draw (k-means initial means, dead-code rows): N ranks, each holding a shard of the
 * rows, must pick exactly the rows one process picks from the whole batch with the same draws.
 */

interface Case {
  readonly size: number
  readonly c: number
  readonly n: number
  readonly d: number
  readonly k: number
  readonly rows: number[] // (c, size·n, d)
  readonly u: number[] // (c, size·n), ties included
  readonly mask: boolean[] | null // (c, size·n)
}

const caseArb: fc.Arbitrary<Case> = fc
  .record({ size: fc.integer({ min: 1, max: 4 }), c: fc.integer({ min: 1, max: 2 }), n: fc.integer({ min: 1, max: 4 }), d: fc.integer({ min: 1, max: 3 }), k: fc.integer({ min: 1, max: 9 }), masked: fc.boolean() })
  .chain(({ size, c, n, d, k, masked }) => {
    const N = size * n
    return fc.record({
      size: fc.constant(size), c: fc.constant(c), n: fc.constant(n), d: fc.constant(d), k: fc.constant(k),
      rows: fc.array(fc.integer({ min: -50, max: 50 }).map((v) => v / 4), { minLength: c * N * d, maxLength: c * N * d }),
      // few distinct values: ties are common, and broken by global position
      u: fc.array(fc.integer({ min: 0, max: 5 }).map((v) => v / 8), { minLength: c * N, maxLength: c * N }),
      mask: masked ? fc.array(fc.boolean(), { minLength: c * N, maxLength: c * N }) : fc.constant(null),
    })
  })

/** The definition, on the host: slot s gets the drawable row of rank s mod m (ties: earlier row first). */
function expected(cs: Case): number[] {
  const N = cs.size * cs.n
  const out: number[] = []
  for (let c = 0; c < cs.c; c++) {
    const drawable = [...Array(N).keys()].filter((j) => !cs.mask || cs.mask[c * N + j])
    const order = [...drawable].sort((a, b) => cs.u[c * N + a]! - cs.u[c * N + b]! || a - b)
    for (let s = 0; s < cs.k; s++) {
      const j = order[s % Math.max(order.length, 1)]
      for (let e = 0; e < cs.d; e++) out.push(j === undefined ? 0 : cs.rows[(c * N + j) * cs.d + e]!)
    }
  }
  return out
}

/** Rank r's shard: rows [r·n, (r+1)·n) of every codebook. */
function shard(cs: Case, r: number): HostTensor[] {
  const N = cs.size * cs.n
  const rows: number[] = [], mask: number[] = []
  for (let c = 0; c < cs.c; c++) {
    rows.push(...cs.rows.slice((c * N + r * cs.n) * cs.d, (c * N + (r + 1) * cs.n) * cs.d))
    if (cs.mask) mask.push(...cs.mask.slice(c * N + r * cs.n, c * N + (r + 1) * cs.n).map(Number))
  }
  const t = [tensorOf(rows, [cs.c, cs.n, cs.d]), tensorOf(cs.u, [cs.c, N])]
  return cs.mask ? [...t, tensorOf(mask, [cs.c, cs.n], 'bool')] : t
}

async function synced(backend: Backend, cs: Case): Promise<number[][]> {
  const specs = shard(cs, 0)
  const { program } = traceOrThrow(specs, (...ins: Tensor[]) => {
    const [rows, u, mask] = ins as [Tensor, Tensor, Tensor | undefined]
    const sync = { size: cs.size, rank: rows.builder.axisIndex(cs.size) }
    return sampleRowsSynced(rows, cs.k, { u, ...(mask ? { mask } : {}) }, sync)
  })
  const comms = localCollectives(cs.size)
  const outs = await Promise.all(comms.map((comm, r) => runCollective(backend, program, shard(cs, r), comm)))
  return outs.map((o) => {
    if (E.isLeft(o)) throw o.left
    return Array.from(o.right[0]!.data)
  })
}

describeLanes('distributed-sampling', nodeLanes, (l) => `synced row draws on ${l.name}`, (backend) => {
  test('every rank gets the rows one process draws from the whole batch', async () => {
    await fc.assert(
      fc.asyncProperty(caseArb, async (cs) => {
        const want = expected(cs)
        for (const got of await synced(backend, cs)) expect(got).toEqual(want)
        if (!cs.mask) {
          // and the single-process code (sampleRows) agrees with the definition
          const N = cs.size * cs.n
          const { program } = traceOrThrow([tensorOf(cs.rows, [cs.c, N, cs.d]), tensorOf(cs.u, [cs.c, N])], (rows: Tensor, u: Tensor) => sampleRows(rows, cs.k, u))
          const one = await runCollective(backend, program, [tensorOf(cs.rows, [cs.c, N, cs.d]), tensorOf(cs.u, [cs.c, N])], localCollectives(1)[0]!)
          expect(E.isRight(one) && Array.from(one.right[0]!.data)).toEqual(want)
        }
      }),
      { numRuns: 25 },
    )
  })

  test('gatherRows puts every rank\'s rows at their global positions', async () => {
    const size = 3, n = 2
    const { program } = traceOrThrow([{ shape: [2, n], dtype: 'float32' }] as const, (t: Tensor) => {
      const sync = { size, rank: t.builder.axisIndex(size) }
      return gatherRows(t, localRowIndex(sync, n), size * n, sync)
    })
    const comms = localCollectives(size)
    const outs = await Promise.all(comms.map((comm, r) => runCollective(backend, program, [tensorOf([10 * r, 10 * r + 1, -r, -r - 0.5], [2, n])], comm)))
    for (const o of outs) expect(E.isRight(o) && Array.from(o.right[0]!.data)).toEqual([0, 1, 10, 11, 20, 21, 0, -0.5, -1, -1.5, -2, -2.5])
  })
})
