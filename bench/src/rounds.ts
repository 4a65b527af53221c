import type { ChildResult } from './child.js'

/**
 * Rounds: the machines are shared, and their load comes and goes over tens of seconds, longer
 * than one implementation's process. Implementations whose calls take under ROUND_MAX_MS are run
 * again in `rounds` processes each, the order of implementations reversed every other round, so a
 * peer and Tessera meet the same windows; a row's median is the median of its rounds' medians.
 * Memory is measured in the first round only (the later ones make no memory calls).
 */
export const ROUND_MAX_MS = 1000

export const rerun = (r: ChildResult): boolean => r.status === 'ok' && r.medianMs !== undefined && r.medianMs <= ROUND_MAX_MS && (r.runs ?? 0) >= 5

export const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const h = s.length >> 1
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2
}

/** The first round's result with the later rounds' timings merged in (see ROUND_MAX_MS); a failed or mismatched later round is reported as such. */
export function mergeRounds(first: ChildResult, later: readonly ChildResult[]): ChildResult {
  if (later.length === 0) return first
  const bad = later.find((r) => r.status !== 'ok' || r.medianMs === undefined)
  if (bad) return { ...first, status: bad.status === 'ok' ? 'failed' : bad.status, note: `a later round: ${bad.note ?? bad.status}${first.note ? `; ${first.note}` : ''}` }
  const all = [first, ...later]
  const firstCallOf = (r: ChildResult) => (r.setupMs !== undefined && r.firstRunMs !== undefined ? r.setupMs + r.firstRunMs : undefined)
  const withFirst = all.filter((r) => firstCallOf(r) !== undefined).sort((a, b) => firstCallOf(a)! - firstCallOf(b)!)
  const mid = withFirst[(withFirst.length - 1) >> 1]
  return {
    ...first,
    medianMs: median(all.map((r) => r.medianMs!)),
    minMs: Math.min(...all.map((r) => r.minMs ?? Infinity)),
    runs: all.reduce((n, r) => n + (r.runs ?? 0), 0),
    ...(mid ? { setupMs: mid.setupMs!, firstRunMs: mid.firstRunMs!, ...(mid.loadMs !== undefined ? { loadMs: mid.loadMs } : {}) } : {}),
    rounds: all.map((r) => ({ medianMs: r.medianMs!, runs: r.runs ?? 0, ...(firstCallOf(r) !== undefined ? { firstCallMs: firstCallOf(r)! } : {}) })),
  }
}
