import { describe, expect, test } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, Tensor } from '@tessera/core'
import { localCollectives, random, runCollective, tensorOf, traceOrThrow } from '@tessera/core'
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

type Comm = ReturnType<typeof localCollectives>[number]
interface MaskedStep {
  readonly state: Record<string, { data: ArrayLike<number> }>
  readonly loss: { data: ArrayLike<number> }
}

describeLanes('distributed-masked', nodeLanes, (l) => `a synchronised masked step in one thread on ${l.name}`, (backend: Backend) => {
  const q = orThrow(vectorQuantize({ dim: 3, codebook_size: 8, kmeans_init: true, kmeans_iters: 2, threshold_ema_dead_code: 2 }))
  const init = q.init(random.keyFromSeed(0))
  const B = 4, n = 5
  const x = tensorOf(random.normalHost(random.keyFromSeed(9), B * n * 3), [B, n, 3])
  const key = tensorOf([4, 5], [2], 'int32')

  /** One training step on `rows` rows of x with their mask, traced for comm's ranks (or one process). */
  const step = async (rows: number, xs: typeof x, mask: ArrayLike<number>, comm: Comm, world: boolean): Promise<MaskedStep> => {
    const m = tensorOf(mask, [rows, n], 'bool')
    const traced = traceOrThrow([init.params, init.state, xs, key, m] as const, (p: Named<Tensor>, s: Named<Tensor>, xt: Tensor, k: Tensor, mt: Tensor) => {
      const r = q.apply(p, s, xt, { training: true, key: k, mask: mt, ...(world ? { world: { size: comm.size } } : {}) })
      return { state: r.state, loss: r.loss }
    })
    const out = orThrow(await runCollective(backend, traced.program, [...Object.values(init.params), ...Object.values(init.state), xs, key, m], comm))
    return traced.unflattenOutputs(out) as unknown as MaskedStep
  }
  /** The step in one process on the whole batch, and on each of 2 and 4 ranks with their shards. */
  const oneAndRanks = async (keep: ArrayLike<number>) => {
    const one = await step(B, x, keep, localCollectives(1)[0]!, false)
    const bySize: [number, MaskedStep[]][] = []
    for (const size of [2, 4]) {
      const per = B / size
      const shard = (c: Comm) => step(per, tensorOf(x.data.slice(c.rank * per * n * 3, (c.rank + 1) * per * n * 3), [per, n, 3]), Array.from(keep).slice(c.rank * per * n, (c.rank + 1) * per * n), c, true)
      bySize.push([size, await Promise.all(localCollectives(size).map(shard))])
    }
    return { one, bySize }
  }
  const expectStates = (size: number, ranks: readonly MaskedStep[], want: Record<string, { data: ArrayLike<number> }>) => {
    for (const r of ranks)
      for (const [name, t] of Object.entries(want)) {
        const got = Array.from(r.state[name]!.data), w = Array.from(t.data)
        w.forEach((v, i) => expect(Math.abs(got[i]! - v) <= 1e-5 * Math.max(1, Math.abs(v)), `${size} ranks, ${name}[${i}]: ${got[i]} vs ${v}`).toBe(true))
      }
  }

  test('VectorQuantize with a token mask (k-means over kept rows, masked EMA, dead codes from kept rows): 2 and 4 ranks match one process', async () => {
    const keep = random.uniformHost(random.keyFromSeed(10), B * n).map((u) => (u < 0.7 ? 1 : 0))
    const { one, bySize } = await oneAndRanks(keep)
    expect(Array.from(one.state['_codebook.cluster_size']!.data).filter((v) => v === 2).length, 'a code was revived').toBeGreaterThan(0)
    for (const [size, ranks] of bySize) expectStates(size, ranks, one.state)
  })

  test('applyOnRank takes the per-call options applyOnHost takes: each rank\'s mask of its shard gives the one-process masked step; a misspelt option or `world` among them is a Left naming it', async () => {
    const keep = random.uniformHost(random.keyFromSeed(10), B * n).map((u) => (u < 0.7 ? 1 : 0))
    const one = await step(B, x, keep, localCollectives(1)[0]!, false)
    const per = B / 2
    const shardOf = (c: Comm) => ({
      x: tensorOf(x.data.slice(c.rank * per * n * 3, (c.rank + 1) * per * n * 3), [per, n, 3]),
      mask: tensorOf(Array.from(keep).slice(c.rank * per * n, (c.rank + 1) * per * n), [per, n], 'bool'),
    })
    const ranks = await Promise.all(
      localCollectives(2).map(async (c) => {
        const { x: xs, mask } = shardOf(c)
        return orThrow(await applyOnRank(q, { ...init, x: xs, training: true, key, options: { mask } }, backend, c))
      }),
    )
    expectStates(2, ranks, one.state)
    const c0 = localCollectives(1)[0]!
    const { x: xs, mask } = shardOf({ ...c0, rank: 0 } as Comm)
    const misspelt = await applyOnRank(q, { ...init, x: xs, training: true, key, options: { maks: mask } as never }, backend, c0)
    expect(E.isLeft(misspelt) && misspelt.left.message).toMatch(/options\.maks/)
    const world = await applyOnRank(q, { ...init, x: xs, training: true, key, options: { world: { size: 2 } } as never }, backend, c0)
    expect(E.isLeft(world) && world.left.message).toMatch(/options\.world: not an option/)
  })

  test('k-means init where rank 0 holds no kept token: the other ranks\' kept rows initialise every rank; with none kept anywhere every rank keeps the state as given', async () => {
    // rows 0 and 1 (rank 0's shard with 2 and 4 ranks) are masked out entirely
    const keep = Array.from({ length: B * n }, (_, i) => (i < 2 * n ? 0 : i % 3 === 0 ? 0 : 1))
    const { one, bySize } = await oneAndRanks(keep)
    expect(one.state['_codebook.initted']!.data[0]).toBe(1)
    for (const [size, ranks] of bySize) expectStates(size, ranks, one.state)
    const nothing = await oneAndRanks(new Array<number>(B * n).fill(0))
    for (const [size, ranks] of [[1, [nothing.one]] as [number, MaskedStep[]], ...nothing.bySize]) {
      expectStates(size, ranks, init.state)
      for (const r of ranks) expect(r.state['_codebook.initted']!.data[0], `${size} ranks`).toBe(0)
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
