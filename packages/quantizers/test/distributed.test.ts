import { describe, expect, test } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, Tensor } from '@tessera/core'
import { localCollectives, random, tensorOf, traceOrThrow } from '@tessera/core'
import { runRanks } from '@tessera/core/worker-threads'
import { cpuBackend } from '@tessera/backend-cpu'
import type { StepResult } from './distributed-scenarios.js'
import { expectSameAsOneProcess, runScenarioRank, runScenarioSingle, scenarios } from './distributed-scenarios.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'
import { applyOnRank } from '../src/distributed.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import type { Named, Quantizer } from '../src/quantizer.js'
import { orThrow } from './helpers.js'

/**
 * The distributed property: N ranks, each on its shard of a batch, end a training step with the
 * state (and losses) one process computes on the whole batch.
 */

describeLanes('distributed', nodeLanes, (l) => `synchronised training steps in one thread on ${l.name}`, (backend: Backend) => {
  for (const sc of scenarios)
    test(`${sc.name}: 2 and 4 ranks match one process`, async () => {
      const single = await runScenarioSingle(backend, sc)
      for (const size of [2, 4]) {
        const ranks = await Promise.all(localCollectives(size).map((comm) => runScenarioRank(backend, sc, comm)))
        expectSameAsOneProcess(sc, single, ranks)
      }
    })
})

const boot = new URL('./fixtures/tsx-worker.mjs', import.meta.url)
const module = new URL('./fixtures/rank-step.ts', import.meta.url).href

describe('synchronised training steps on worker threads (cpu backend)', () => {
  for (const size of [2, 4])
    test(`${size} worker threads match one process in every scenario`, async () => {
      const got = await runRanks<unknown, Record<string, StepResult[]>>(size, boot, { module }, { execArgv: ['--conditions=@tessera/source'], timeoutMs: 300_000 })
      if (E.isLeft(got)) throw got.left
      expect(got.right.length).toBe(size)
      for (const sc of scenarios) expectSameAsOneProcess(sc, await runScenarioSingle(cpuBackend(), sc), got.right.map((r) => r[sc.name]!))
    }, 300_000)
})

describe('what a call syncs, and what it refuses', () => {
  const x = tensorOf(random.normalHost(random.keyFromSeed(3), 2 * 3 * 4), [2, 3, 4])
  const key = tensorOf([1, 2], [2], 'int32')
  /** The primitives of one training call traced for `size` ranks. */
  const prims = (q: Quantizer, size: number | undefined) => {
    const init = q.init(random.keyFromSeed(0))
    const { program } = traceOrThrow([init.params, init.state, x, key] as const, (p: Named<Tensor>, s: Named<Tensor>, xs: Tensor, k: Tensor) =>
      q.apply(p, s, xs, { training: true, key: k, ...(size ? { world: { size } } : {}) }).state,
    )
    return new Set(program.eqns.map((e) => e.prim))
  }

  test('sync_codebook null syncs a call with a world; false never; a call without a world has no collective', () => {
    const synced = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, kmeans_init: true, threshold_ema_dead_code: 2 }))
    expect(prims(synced, 2).has('all_reduce')).toBe(true)
    expect(prims(synced, 2).has('axis_index')).toBe(true)
    expect(prims(synced, undefined).has('all_reduce')).toBe(false)
    const local = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, kmeans_init: true, threshold_ema_dead_code: 2, sync_codebook: false }))
    expect(prims(local, 2).has('all_reduce')).toBe(false)
    // sync_kmeans false: EMA statistics are summed, k-means and dead-code draws stay per rank (no axis_index)
    const emaOnly = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, kmeans_init: true, threshold_ema_dead_code: 2, sync_kmeans: false }))
    expect(prims(emaOnly, 2).has('all_reduce')).toBe(true)
    expect(prims(emaOnly, 2).has('axis_index')).toBe(false)
  })

  test('with sync_codebook false the ranks keep their own statistics', async () => {
    const q = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, sync_codebook: false }))
    const init = q.init(random.keyFromSeed(0))
    const rs = await Promise.all(
      localCollectives(2).map((c) => applyOnRank(q, { ...init, x: tensorOf(x.data.slice(c.rank * 12, (c.rank + 1) * 12), [1, 3, 4]), training: true, key }, cpuBackend(), c)),
    )
    const sizes = rs.map((r) => Array.from(orThrow(r).state['_codebook.cluster_size']!.data))
    expect(sizes[0]).not.toEqual(sizes[1])
  })

  test('bad worlds and collectives, and what does not synchronise, are refused by name', async () => {
    const q = orThrow(vectorQuantize({ dim: 4, codebook_size: 8 }))
    const init = q.init(random.keyFromSeed(0))
    for (const world of [{ size: 0 }, { size: 1.5 }, null]) {
      expect(() =>
        traceOrThrow([init.params, init.state, x] as const, (p: Named<Tensor>, s: Named<Tensor>, xs: Tensor) => q.apply(p, s, xs, { training: true, world: world as never }).loss),
      ).toThrow(/VectorQuantize\.world: world must be \{ size \}/)
    }
    const bad = await applyOnRank(q, { ...init, x, training: true }, cpuBackend(), { rank: 3, size: 2, allReduce: async (t) => [...t] })
    expect(E.isLeft(bad) && bad.left.message).toContain('collective.rank')
    const beam = orThrow(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, beam_size: 2 }))
    const bi = beam.init(random.keyFromSeed(0))
    const r = await applyOnRank(beam, { ...bi, x, training: true, key }, cpuBackend(), localCollectives(1)[0]!)
    expect(E.isLeft(r) && r.left.where).toBe('ResidualVQ.world')
  })
})
