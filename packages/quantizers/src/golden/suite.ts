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
        reports.push({ name: f.name, className: '?', ok: false, checks: [], error: parsed.left.message, worstFloat: NaN, indexMismatches: NaN })
        continue
      }
      reports.push(await runCase(parsed.right, runners, { backend, cache }))
    }
  } finally {
    cache.dispose()
  }
  return reports
}

/** One line per case: PASS/FAIL, the worst float error, index mismatches and the failing outputs. */
export function formatReport(r: CaseReport): string {
  const head = `${r.ok ? 'PASS' : 'FAIL'} ${r.name} (${r.className})`
  if (r.error) return `${head}: ${r.error}`
  const bad = r.checks.filter((k) => !k.ok).map((k) => `${k.name}${k.note ? ` [${k.note}]` : ` [${k.mismatches} off, worst ${k.worst.toExponential(2)}]`}`)
  return `${head}: worst float error ${r.worstFloat.toExponential(2)}, index mismatches ${r.indexMismatches}, ${r.checks.length} outputs${bad.length ? `; failing: ${bad.join(', ')}` : ''}`
}

export function summaryLine(reports: readonly CaseReport[]): string {
  const passed = reports.filter((r) => r.ok).length
  return `${passed} passed, ${reports.length - passed} failed`
}
