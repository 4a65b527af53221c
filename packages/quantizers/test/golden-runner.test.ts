import { readFile } from 'node:fs/promises'
import { resolve } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { caseRunners } from '../src/golden/cases.js'
import { caseName } from '../src/golden/generic-case.js'
import { parseGoldenCase } from '../src/golden/format.js'
import { runCase } from '../src/golden/runner.js'
import { formatReport } from '../src/golden/suite.js'
import { fsq } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { compileCache } from '../src/run.js'
import { applyQ, goldenDir, orThrow, randn } from './helpers.js'

/**
 * The golden runner's own rules, on cases built here in the oracle's format: buffers a case
 * supplies are loaded (a random rotation is never compared with a draw of ours), projections report
 * `project_in_output`, a recorded dead-code draw is replayed, an input the library lacks makes its
 * run unsupported without stopping the others, and Tessera's names map to the cases'.
 */

const backend = cpuBackend()
const cache = compileCache()
afterAll(() => cache.dispose())

type Json = Record<string, unknown>
const tj = (t: HostTensor, dtype: string = t.dtype) => ({ shape: [...t.shape], dtype, data: Array.from(t.data) })
const caseOf = (cls: string, kwargs: Json, state: Json, runs: Json[]) =>
  orThrow(parseGoldenCase(JSON.stringify({ format: 'vqp-oracle/1', name: 'built', class: cls, constructor: { class: cls, kwargs }, state, runs })))
const run = (c: ReturnType<typeof caseOf>) => runCase(c, caseRunners, { backend, cache })

describe('the golden runner', () => {
  it('loads a random buffer the case supplies (FSQ orthogonal_rot) instead of comparing its own draw', async () => {
    const kwargs = { levels: [8, 5, 5, 5], orthogonal_rotation: true }
    const q = orThrow(fsq(kwargs))
    const other = q.init(random.keyFromSeed(7)) // a rotation the runner's own init (seed 0) does not draw
    const x = randn([2, 6, 4], 3)
    const r = await applyQ(backend, q, other, x)
    const state = Object.fromEntries(Object.entries(other.state).map(([k, v]) => [k, tj(v)]))
    const outputs = { quantized: tj(r.quantized), indices: tj(r.indices) }
    const report = await run(caseOf('FSQ', kwargs, state, [{ name: 'eval_forward', mode: 'eval', inputs: { x: tj(x) }, outputs }]))
    expect(report.status, formatReport(report)).toBe('pass')
    expect(report.checks.map((k) => k.name)).not.toContain('state.orthogonal_rot')
    expect(report.checks.map((k) => k.name)).toContain('state.implicit_codebook')
    // the outputs depend on the loaded rotation: another rotation in the case fails them
    const swapped = { ...state, orthogonal_rot: tj(q.init(random.keyFromSeed(8)).state['orthogonal_rot']!) }
    const bad = await run(caseOf('FSQ', kwargs, swapped, [{ name: 'eval_forward', mode: 'eval', inputs: { x: tj(x) }, outputs }]))
    expect(bad.status).toBe('fail')
  })

  it("reports LFQ's project_in_output (x·Wᵀ + b, computed here in float64)", async () => {
    const kwargs = { dim: 6, codebook_size: 16 }
    const q = orThrow(lfq(kwargs))
    const init = q.init(random.keyFromSeed(2))
    const x = randn([2, 5, 6], 4)
    const w = init.params['project_in.weight']!, b = init.params['project_in.bias']!
    const want: number[] = []
    for (let t = 0; t < 10; t++)
      for (let o = 0; o < 4; o++) {
        let s = b.data[o]!
        for (let i = 0; i < 6; i++) s += x.data[t * 6 + i]! * w.data[o * 6 + i]!
        want.push(Math.fround(s))
      }
    const state = Object.fromEntries(Object.entries({ ...init.params, ...init.state }).map(([k, v]) => [k, tj(v)]))
    const outputs = { project_in_output: tj(tensorOf(want, [2, 5, 4])) }
    const report = await run(caseOf('LFQ', kwargs, state, [{ name: 'eval_forward', mode: 'eval', inputs: { x: tj(x) }, outputs }]))
    expect(report.status, formatReport(report)).toBe('pass')
    expect(report.runs[0]!.checks.map((k) => k.name)).toEqual(['eval_forward.project_in_output'])
  })

  it('replays a recorded dead-code draw: expired codes get the recorded rows in code order, no key needed', async () => {
    const kwargs = { dim: 4, codebook_size: 8, decay: 0.8, kmeans_init: false, threshold_ema_dead_code: 2 }
    const q = orThrow(vectorQuantize(kwargs))
    const init = q.init(random.keyFromSeed(0))
    // codes 1, 3, 5, 7 start empty: after one EMA step (weight 0.2) they stay under the threshold unless 10 of the 12 rows pick them
    const cs = tensorOf([10, 0, 10, 0, 10, 0, 10, 0], [1, 8])
    const start = { params: init.params, state: { ...init.state, '_codebook.cluster_size': cs } }
    const x = randn([1, 12, 4], 5)
    // the EMA step alone (expiry off), then expiry applied on the host with the recorded rows
    const ema = await applyQ(backend, orThrow(vectorQuantize({ ...kwargs, threshold_ema_dead_code: 0 })), start, x, { training: true })
    const csAfter = Array.from(ema.state['_codebook.cluster_size']!.data)
    const expired = csAfter.flatMap((v, k) => (v < 2 ? [k] : []))
    expect(expired.length).toBeGreaterThan(0)
    const rows = expired.map((_, j) => (11 - 3 * j + 12) % 12) // distinct rows, not in code order
    const embed = Array.from(ema.state['_codebook.embed']!.data), avg = Array.from(ema.state['_codebook.embed_avg']!.data)
    expired.forEach((k, j) => {
      for (let i = 0; i < 4; i++) {
        embed[k * 4 + i] = x.data[rows[j]! * 4 + i]!
        avg[k * 4 + i] = Math.fround(x.data[rows[j]! * 4 + i]! * 2)
      }
      csAfter[k] = 2
    })
    const state = Object.fromEntries(Object.entries(start.state).map(([k, v]) => [k, tj(v)]))
    const stateAfter = {
      '_codebook.initted': tj(ema.state['_codebook.initted']!),
      '_codebook.cluster_size': tj(tensorOf(csAfter, [1, 8])),
      '_codebook.embed_avg': tj(tensorOf(avg, [1, 8, 4])),
      '_codebook.embed': tj(tensorOf(embed, [1, 8, 4])),
    }
    const beforeExpiry = Object.fromEntries(Object.entries(ema.state).map(([k, v]) => [`state_after_ema_before_expiry.${k}`, tj(v)]))
    const recorded = (rs: number[]) => ({
      name: 'train_expiry',
      mode: 'train',
      inputs: { x: tj(x) },
      outputs: { indices: tj(ema.indices, 'int64'), replacement_source_row: { shape: [rs.length], dtype: 'int64', data: rs }, ...beforeExpiry },
      state_after: stateAfter,
    })
    const report = await run(caseOf('VectorQuantize', kwargs, state, [recorded(rows)]))
    expect(report.status, formatReport(report)).toBe('pass')
    expect(report.runs[0]!.replayed).toEqual(['replacement_source_row'])
    expect(formatReport(report)).toContain("replayed the reference's draw: replacement_source_row")
    // other rows than those recorded: the expiry step disagrees
    const shifted = await run(caseOf('VectorQuantize', kwargs, state, [recorded(rows.map((r) => (r + 1) % 12))]))
    expect(shifted.status).toBe('fail')
    expect(shifted.checks.filter((k) => !k.ok).map((k) => k.name)).toContain('train_expiry.state_after._codebook.embed')
    // without a recorded draw the step needs a key the case cannot give: the case fails, naming it
    const { replacement_source_row: _, ...unrecorded } = recorded(rows).outputs
    const noDraw = await run(caseOf('VectorQuantize', kwargs, state, [{ ...recorded(rows), outputs: unrecorded }]))
    expect(noDraw.status).toBe('fail')
    expect(noDraw.error).toMatch(/threshold_ema_dead_code/)
  })

  it('an input the library lacks makes that run unsupported; the other runs are still checked', async () => {
    const json = JSON.parse(await readFile(resolve(goldenDir, 'vq_euclidean.json'), 'utf8'))
    const mask = { shape: [2, 10], dtype: 'bool', data: Array.from({ length: 20 }, (_, i) => i % 3 !== 0) }
    // an input no runner takes (VectorQuantize takes mask, lens and indices)
    json.runs[0].inputs.future_input = mask
    const report = await run(orThrow(parseGoldenCase(JSON.stringify(json))))
    expect(report.status).toBe('unsupported')
    expect(report.runs.map((r) => [r.name, r.status, r.reason])).toEqual([
      ['eval_forward', 'unsupported', 'not implemented: future_input'],
      ['train_frozen_codebook', 'pass', undefined],
    ])
    expect(formatReport(report)).toMatch(/^UNSUPPORTED vq_euclidean \(VectorQuantize\): not implemented: future_input \(runs eval_forward\); worst float error/)
    // a wrong output in the run that is checked still fails the case
    json.runs[1].outputs.indices.data[0] += 1
    const bad = await run(orThrow(parseGoldenCase(JSON.stringify(json))))
    expect(bad.status).toBe('fail')
  })

  it("maps Tessera's names to the cases' names", () => {
    expect(caseName('projected')).toBe('project_in_output')
    expect(caseName('codes')).toBe('codes_before_project_out')
    expect(caseName('rvqs.1.layer0_input')).toBe('group1_layer0_input')
    expect(caseName('rvqs.0.project_in_output')).toBe('group0_project_in_output')
    expect(caseName('codebook_dist')).toBe('codebook_dist')
    expect(E.isRight(parseGoldenCase('{}'))).toBe(false)
  })
})
