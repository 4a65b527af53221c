import * as E from 'fp-ts/lib/Either.js'
import type { Backend } from '@tessera/core'
import { compileCache } from '../run.js'
import { parseGoldenCase } from './format.js'
import type { CaseReport, CaseRunners } from './runner.js'
import { runCase } from './runner.js'

/**
 * A golden case file's name and text. Reading them (from a folder, a fetch, a bundle) is the
 * caller's business, so this module runs in browsers too; `tessera golden <dir>` reads a folder.
 */
export interface GoldenFile {
  readonly name: string
  readonly text: string
}

/** Run golden case files in name order, sharing one compile cache. A file that does not parse fails. */
export async function runGoldenFiles(files: readonly GoldenFile[], runners: CaseRunners, backend: Backend): Promise<CaseReport[]> {
  const sorted = [...files].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  const cache = compileCache()
  const reports: CaseReport[] = []
  try {
    for (const f of sorted) {
      const parsed = parseGoldenCase(f.text, f.name)
      if (E.isLeft(parsed)) {
        reports.push({ name: f.name, className: '?', status: 'fail', ok: false, checks: [], runs: [], error: parsed.left.message, worstFloat: NaN, indexMismatches: NaN })
        continue
      }
      reports.push(await runCase(parsed.right, runners, { backend, cache }))
    }
  } finally {
    cache.dispose()
  }
  return reports
}

/**
 * One line per case: PASS, FAIL or UNSUPPORTED, the worst float error, index mismatches and the
 * failing outputs; an unsupported case names what the library lacks and the runs that need it.
 */
export function formatReport(r: CaseReport): string {
  const head = `${r.status.toUpperCase()} ${r.name} (${r.className})`
  if (r.error) return `${head}: ${r.error}`
  if (r.unsupported) return `${head}: ${r.unsupported}`
  const parts: string[] = []
  const why = new Map<string, string[]>()
  for (const run of r.runs) if (run.reason !== undefined) why.set(run.reason, [...(why.get(run.reason) ?? []), run.name])
  for (const [reason, names] of why) parts.push(`${reason} (runs ${names.join(', ')})`)
  if (r.checks.length || !why.size) parts.push(`worst float error ${r.worstFloat.toExponential(2)}, index mismatches ${r.indexMismatches}, ${r.checks.length} outputs`)
  const replayed = [...new Set(r.runs.flatMap((run) => run.replayed))]
  if (replayed.length) parts.push(`replayed the reference's draw: ${replayed.join(', ')}`)
  const bad = r.checks.filter((k) => !k.ok).map((k) => `${k.name}${k.note ? ` [${k.note}]` : ` [${k.mismatches} off, worst ${k.worst.toExponential(2)}]`}`)
  if (bad.length) parts.push(`failing: ${bad.join(', ')}`)
  return `${head}: ${parts.join('; ')}`
}

/** "N passed, N failed", and ", N unsupported" when some case needs what the library lacks. */
export function summaryLine(reports: readonly CaseReport[]): string {
  const count = (s: CaseReport['status']) => reports.filter((r) => r.status === s).length
  const unsupported = count('unsupported')
  return `${count('pass')} passed, ${count('fail')} failed${unsupported ? `, ${unsupported} unsupported` : ''}`
}
