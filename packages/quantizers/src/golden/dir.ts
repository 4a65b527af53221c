import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend } from '@tessera/core'
import { compileCache } from '../run.js'
import { parseGoldenCase } from './format.js'
import type { CaseReport, CaseRunners } from './runner.js'
import { runCase } from './runner.js'

/** Run every `*.json` case in a folder (sorted by file name). A file that does not parse fails. */
export async function runGoldenDir(dir: string, runners: CaseRunners, backend: Backend): Promise<CaseReport[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.json')).sort()
  const cache = compileCache()
  const reports: CaseReport[] = []
  try {
    for (const f of files) {
      const parsed = parseGoldenCase(await readFile(join(dir, f), 'utf8'), f)
      if (E.isLeft(parsed)) {
        reports.push({ name: f, className: '?', ok: false, checks: [], error: parsed.left.message, worstFloat: NaN, indexMismatches: NaN })
        continue
      }
      reports.push(await runCase(parsed.right, runners, { backend, cache }))
    }
  } finally {
    cache.dispose()
  }
  return reports
}

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
