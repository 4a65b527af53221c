import { resolve } from 'node:path'
import { cpuBackend } from '@tessera/backend-cpu'
import { caseRunners } from './cases.js'
import { formatReport, runGoldenDir, summaryLine } from './dir.js'

// pnpm golden <dir>: run every reference case in <dir>, one line per case, then "N passed, N failed".
const dir = process.argv[2]
if (!dir) {
  console.error('usage: pnpm golden <dir>')
  process.exit(2)
}
// pnpm runs scripts from the workspace root; INIT_CWD is where the user typed the command
const base = process.env['INIT_CWD'] ?? process.cwd()
const folder = resolve(base, dir)
let reports
try {
  reports = await runGoldenDir(folder, caseRunners, cpuBackend())
} catch (e) {
  console.error(`cannot read golden cases from ${folder}: ${(e as Error).message}`)
  process.exit(2)
}
for (const r of reports) console.log(formatReport(r))
console.log(summaryLine(reports))
process.exit(reports.length > 0 && reports.every((r) => r.ok) ? 0 : 1)
