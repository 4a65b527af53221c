import { describe, expect, it } from 'vitest'
import type { ChildResult } from '../src/child.js'
import { median, mergeRounds, rerun } from '../src/rounds.js'

const row = (medianMs: number, extra: Partial<ChildResult> = {}): ChildResult => ({
  workload: 'W1', impl: 'tessera/fast-wasm-2t', status: 'ok', medianMs, minMs: medianMs * 0.9, runs: 30, rssBaseMB: 46, rssPeakMB: 75, ...extra,
})

describe('bench rounds', () => {
  it('a row is timed again only when it ran fine, was timed at least five times and its calls take under a second', () => {
    expect(rerun(row(20))).toBe(true)
    expect(rerun(row(20, { runs: 1 }))).toBe(false)
    expect(rerun(row(1500))).toBe(false)
    expect(rerun(row(20, { status: 'mismatch' }))).toBe(false)
  })

  it('the median of an even count is the mean of the middle two', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(2.5)
  })

  it("merges the rounds: the median of their medians, the least call, runs summed, memory and notes from the first, the median round's first call", () => {
    const first = row(30, { setupMs: 6, firstRunMs: 80, loadMs: 7, note: 'first note', rssPeakMB: 75 })
    const later = [row(18, { setupMs: 5, firstRunMs: 50, loadMs: 6, minMs: 17, rssPeakMB: 99 }), row(20, { setupMs: 7, firstRunMs: 60, loadMs: 8, runs: 25 })]
    const m = mergeRounds(first, later)
    expect(m.medianMs).toBe(20)
    expect(m.minMs).toBe(17)
    expect(m.runs).toBe(85)
    expect(m.rssPeakMB).toBe(75)
    expect(m.note).toBe('first note')
    // first calls 86, 55, 67: the median one is the third round's
    expect([m.setupMs, m.firstRunMs, m.loadMs]).toEqual([7, 60, 8])
    expect(m.rounds!.map((r) => r.medianMs)).toEqual([30, 18, 20])
    expect(m.rounds!.map((r) => r.firstCallMs)).toEqual([86, 55, 67])
  })

  it('a later round that fails or disagrees with the reference decides the row', () => {
    const first = row(20)
    expect(mergeRounds(first, [])).toBe(first)
    const failed = mergeRounds(first, [row(21), row(0, { status: 'failed', medianMs: undefined, note: 'process exited with 1' })])
    expect(failed.status).toBe('failed')
    expect(failed.note).toContain('process exited with 1')
    expect(mergeRounds(first, [row(19, { status: 'mismatch', note: '3 indices differ' })]).status).toBe('mismatch')
  })
})
