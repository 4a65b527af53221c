import { describe, expect, test } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend } from '@tessera/core'
import { localCollectives } from '@tessera/core'
import { runRanks } from '@tessera/core/worker-threads'
import { cpuBackend } from '@tessera/backend-cpu'
import type { StepResult } from './distributed-scenarios.js'
import { expectSameAsOneProcess, runScenarioRank, runScenarioSingle, scenarios } from './distributed-scenarios.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'

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
