import * as E from 'fp-ts/lib/Either.js'
import { expect } from 'vitest'
import type { Backend, Collective, HostTensor, Tensor } from '@tessera/core'
import { random, runCollective, soloCollective, tensorOf, traceValueAndGrad } from '@tessera/core'
import { applyOnRank } from '../src/distributed.js'
import { hierarchicalVQ } from '../src/hierarchical/hierarchical-vq.js'
import { lfq } from '../src/lfq/lfq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import type { Init, Named, Quantizer } from '../src/quantizer.js'
import { applyOnHost } from '../src/run.js'

/**
 * Synchronised training steps, as data: a scenario is a quantizer, a global batch per step and a
 * key. One process runs it on the whole batch; N ranks run it on equal shards (rank r holds rows
 * [r·B/N, (r+1)·B/N) of axis 0) and must end every step with the same state, the same synced
 * losses, per-rank losses whose mean is the whole batch's, and the whole batch's outputs.
 * Used in one thread (localCollectives) and on worker threads (fixtures/rank-step.ts).
 */

export interface StepResult {
  readonly state: Record<string, number[]>
  readonly loss: number
  readonly losses: Record<string, number>
  readonly indices: number[]
  readonly quantized: number[]
  /** d(loss)/dx for this rank's rows (gradient scenarios). */
  readonly grad?: number[]
}

export interface Scenario {
  readonly name: string
  readonly make: () => Quantizer
  /** Global batch size (divisible by 4). */
  readonly batch: number
  readonly x: (step: number) => HostTensor
  readonly steps: number
  /** Loss terms that are means over a rank's own rows (the reference does not all-reduce them). */
  readonly localLoss: (name: string) => boolean
  readonly grad?: boolean
  /** The reset cluster size of dead codes, where the scenario must revive some (checked on the one-process run). */
  readonly revives?: number
}

const orThrow = <A>(e: E.Either<{ message: string }, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left.message)
  return e.right
}

const randn = (shape: readonly number[], seed: number, scale = 1): HostTensor =>
  tensorOf(random.normalHost(random.keyFromSeed(seed), shape.reduce((a, b) => a * b, 1)).map((v) => v * scale), shape)

const keyOf = (step: number): HostTensor => tensorOf([11 + step, 7 * step + 3], [2], 'int32')

export const scenarios: readonly Scenario[] = [
  {
    name: 'LFQ entropy aux loss',
    make: () => orThrow(lfq({ dim: 6, codebook_size: 16, entropy_loss_weight: 0.1, diversity_gamma: 1.5, commitment_loss_weight: 0.25 })),
    batch: 8,
    x: (s) => randn([8, 3, 6], 100 + s),
    steps: 1,
    localLoss: (n) => ['per_sample_entropy', 'commitment', 'entropy_aux_loss'].includes(n),
    grad: true,
  },
  {
    // 24 tokens, 9 sampled over the global batch: the ranks' parts of the subset need not be equal
    name: 'LFQ entropy aux loss over a sampled fraction of the tokens (frac_per_sample_entropy 0.4)',
    make: () => orThrow(lfq({ dim: 6, codebook_size: 16, entropy_loss_weight: 0.1, diversity_gamma: 1.5, commitment_loss_weight: 0.25, frac_per_sample_entropy: 0.4 })),
    batch: 8,
    x: (s) => randn([8, 3, 6], 150 + s),
    steps: 2,
    localLoss: (n) => ['per_sample_entropy', 'commitment', 'entropy_aux_loss'].includes(n),
    grad: true,
  },
  {
    name: 'VectorQuantize EMA',
    make: () => orThrow(vectorQuantize({ dim: 4, codebook_size: 8, decay: 0.8, commitment_weight: 1 })),
    batch: 8,
    x: (s) => randn([8, 5, 4], 200 + s),
    steps: 2,
    localLoss: (n) => n === 'commitment',
    grad: true,
  },
  {
    name: 'VectorQuantize k-means init and dead-code revival',
    make: () => orThrow(vectorQuantize({ dim: 3, codebook_size: 16, kmeans_init: true, kmeans_iters: 3, threshold_ema_dead_code: 2, decay: 0.5 })),
    batch: 8,
    x: (s) => randn([8, 4, 3], 300 + s),
    steps: 3,
    localLoss: (n) => n === 'commitment',
    revives: 2,
  },
  {
    name: 'VectorQuantize cosine, two codebooks (separate heads), Gumbel sampling, k-means, dead codes',
    make: () =>
      orThrow(vectorQuantize({ dim: 4, heads: 2, separate_codebook_per_head: true, codebook_dim: 2, codebook_size: 6, use_cosine_sim: true, kmeans_init: true, kmeans_iters: 2, threshold_ema_dead_code: 3, stochastic_sample_codes: true, sample_codebook_temp: 0.5 })),
    batch: 4,
    x: (s) => randn([4, 6, 4], 400 + s),
    steps: 2,
    localLoss: (n) => n === 'commitment',
    revives: 3,
  },
  {
    name: 'VectorQuantize affine_param with sync_affine_param',
    make: () => orThrow(vectorQuantize({ dim: 3, codebook_size: 8, affine_param: true, sync_affine_param: true, threshold_ema_dead_code: 1 })),
    batch: 8,
    x: (s) => randn([8, 3, 3], 500 + s, 2),
    steps: 2,
    localLoss: (n) => n === 'commitment',
    revives: 1,
  },
  {
    name: 'ResidualVQ shared codebook with k-means and dead-code revival',
    make: () => orThrow(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 3, shared_codebook: true, kmeans_init: true, kmeans_iters: 2, threshold_ema_dead_code: 2 })),
    batch: 4,
    x: (s) => randn([4, 4, 4], 600 + s),
    steps: 2,
    localLoss: (n) => n.endsWith('commitment'),
    grad: true,
    revives: 2,
  },
  {
    name: 'HierarchicalVQ (one codebook over three scales, k-means and dead-code revival)',
    make: () => orThrow(hierarchicalVQ({ dim: 3, codebook_size: 8, accept_image_fmap: true, scales: [1, 2, 3], kmeans_init: true, kmeans_iters: 2, threshold_ema_dead_code: 1 })),
    batch: 4,
    x: (s) => randn([4, 3, 3, 3], 700 + s),
    steps: 2,
    localLoss: (n) => n.startsWith('scale') || n.endsWith('commitment'),
    revives: 1,
  },
]

/** Rank r's rows of axis 0. */
export function shardOf(x: HostTensor, size: number, rank: number): HostTensor {
  const rows = x.shape[0]! / size
  const per = x.data.length / x.shape[0]!
  return { shape: [rows, ...x.shape.slice(1)], dtype: x.dtype, data: x.data.slice(rank * rows * per, (rank + 1) * rows * per) } as HostTensor
}

const numbers = (rec: Named<HostTensor>) => Object.fromEntries(Object.entries(rec).map(([k, t]) => [k, Array.from(t.data)]))

/** d(loss)/dx of one step, traced for `size` ranks (or none) and run through `comm`. */
async function gradOf(backend: Backend, q: Quantizer, init: Init, x: HostTensor, key: HostTensor, comm: Collective, world: boolean): Promise<number[]> {
  const traced = orThrow(
    traceValueAndGrad(
      [init.params, init.state, x, key] as const,
      (p: Named<Tensor>, s: Named<Tensor>, xs: Tensor, k: Tensor) => q.apply(p, s, xs, { training: true, key: k, ...(world ? { world: { size: comm.size } } : {}) }).loss,
      2,
    ),
  )
  const leaves = [...Object.values(init.params), ...Object.values(init.state), x, key]
  const out = orThrow(await runCollective(backend, traced.program, leaves, comm))
  const { grad } = traced.unflattenOutputs(out) as unknown as { grad: HostTensor }
  return Array.from(grad.data)
}

/** The scenario on one rank of `comm` (its shard of every step's batch). */
export async function runScenarioRank(backend: Backend, sc: Scenario, comm: Collective): Promise<StepResult[]> {
  const q = sc.make()
  let init = q.init(random.keyFromSeed(5))
  const out: StepResult[] = []
  for (let step = 0; step < sc.steps; step++) {
    const x = shardOf(sc.x(step), comm.size, comm.rank)
    const key = keyOf(step)
    const r = orThrow(await applyOnRank(q, { params: init.params, state: init.state, x, training: true, key }, backend, comm))
    const grad = sc.grad ? await gradOf(backend, q, init, x, key, comm, true) : undefined
    out.push({ state: numbers(r.state), loss: r.loss.data[0]!, losses: Object.fromEntries(Object.entries(r.losses).map(([k, t]) => [k, t.data[0]!])), indices: Array.from(r.indices.data), quantized: Array.from(r.quantized.data), ...(grad ? { grad } : {}) })
    init = { params: init.params, state: r.state }
  }
  return out
}

/** The scenario in one process on the whole batch (no collectives in its programs). */
export async function runScenarioSingle(backend: Backend, sc: Scenario): Promise<StepResult[]> {
  const q = sc.make()
  let init = q.init(random.keyFromSeed(5))
  const out: StepResult[] = []
  for (let step = 0; step < sc.steps; step++) {
    const x = sc.x(step)
    const key = keyOf(step)
    const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x, training: true, key, nonFinite: 'propagate' }, backend))
    const grad = sc.grad ? await gradOf(backend, q, init, x, key, soloCollective(), false) : undefined
    out.push({ state: numbers(r.state), loss: r.loss.data[0]!, losses: Object.fromEntries(Object.entries(r.losses).map(([k, t]) => [k, t.data[0]!])), indices: Array.from(r.indices.data), quantized: Array.from(r.quantized.data), ...(grad ? { grad } : {}) })
    init = { params: init.params, state: r.state }
  }
  return out
}

/**
 * float32 agreement for values computed from sums whose terms were added in another grouping
 * (per-rank partial sums, then over ranks): the repository's float tolerance, far below any
 * real difference in a step.
 */
const TOL = 1e-5
const close = (got: number, want: number, what: string) =>
  expect(Math.abs(got - want) <= TOL * Math.max(1, Math.abs(want)), `${what}: ${got} vs ${want}`).toBe(true)
const closeAll = (got: readonly number[], want: readonly number[], what: string) => {
  expect(got.length, what).toBe(want.length)
  got.forEach((g, i) => close(g, want[i]!, `${what}[${i}]`))
}

/** Every rank's steps against the whole batch's (see `Scenario`). */
export function expectSameAsOneProcess(sc: Scenario, single: readonly StepResult[], ranks: readonly (readonly StepResult[])[]): void {
  const size = ranks.length
  if (sc.revives !== undefined) {
    // the scenario exercises dead-code revival: some code's cluster size was reset this run
    const sizes = single.flatMap((r) => Object.entries(r.state).filter(([k]) => k.endsWith('cluster_size')).flatMap(([, v]) => v))
    expect(sizes.filter((v) => v === sc.revives).length, `${sc.name}: no code was revived`).toBeGreaterThan(0)
  }
  single.forEach((want, step) => {
    const at = `${sc.name}, ${size} ranks, step ${step}`
    const per = ranks.map((r) => r[step]!)
    // outputs: the ranks' rows concatenated are the whole batch's
    expect(per.flatMap((p) => p.indices), `${at}: indices`).toEqual(want.indices)
    closeAll(per.flatMap((p) => p.quantized), want.quantized, `${at}: quantized`)
    for (const [r, p] of per.entries()) {
      // state: every rank ends the step with the whole batch's state
      expect(Object.keys(p.state).sort(), at).toEqual(Object.keys(want.state).sort())
      for (const [name, v] of Object.entries(want.state)) closeAll(p.state[name]!, v, `${at}: rank ${r} state ${name}`)
      for (const [name, v] of Object.entries(want.losses))
        if (!sc.localLoss(name)) close(p.losses[name]!, v, `${at}: rank ${r} synced loss ${name}`)
    }
    // losses that are means over a rank's rows: their mean over ranks is the whole batch's
    for (const name of Object.keys(want.losses).filter(sc.localLoss)) close(per.reduce((a, p) => a + p.losses[name]!, 0) / size, want.losses[name]!, `${at}: mean over ranks of ${name}`)
    close(per.reduce((a, p) => a + p.loss, 0) / size, want.loss, `${at}: mean over ranks of the loss`)
    // gradients (psum convention): each rank gets d(sum over ranks of the losses)/dx for its rows,
    // size times the whole batch's d(mean loss)/dx (the mean over ranks of data-parallel gradients)
    if (want.grad) closeAll(per.flatMap((p) => p.grad!.map((g) => g / size)), want.grad, `${at}: gradient / ranks`)
  })
}
