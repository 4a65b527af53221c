import { resolve } from 'node:path'
import type { Backend } from '@tessera/core'
import { cpuBackend, fusedCpuBackend } from '@tessera/backend-cpu'
import type { GpuJsMode } from '@tessera/backend-gpujs'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import { caseRunners } from './cases.js'
import { formatReport, runGoldenDir, summaryLine } from './dir.js'

// pnpm golden [--backend <name>] <dir>: run every reference case in <dir>, one line per case, then "N passed, N failed".
const gpuJsNames: Readonly<Record<string, GpuJsMode>> = { 'gpujs-cpu': 'cpu', 'gpujs-webasm': 'webasm', 'gpujs-headlessgl': 'headlessgl' }
const backendNames = ['cpu', 'fused-cpu', ...Object.keys(gpuJsNames)]
const args = process.argv.slice(2)
const at = args.indexOf('--backend')
const backendName = at >= 0 ? args[at + 1] : 'cpu'
const dir = args.filter((_, i) => at < 0 || (i !== at && i !== at + 1))[0]
const usage = () => {
  console.error(`usage: pnpm golden [--backend ${backendNames.join('|')}] <dir>`)
  process.exit(2)
}
if (!dir || backendName === undefined || !backendNames.includes(backendName)) usage()
let backend: Backend
if (backendName === 'cpu') backend = cpuBackend()
else if (backendName === 'fused-cpu') backend = fusedCpuBackend()
else {
  const mode = gpuJsNames[backendName!]!
  const why = await gpuJsUnavailable(mode)
  if (why) {
    console.error(`golden: backend ${backendName} cannot run here: ${why}`)
    process.exit(2)
  }
  backend = gpuJsBackend(mode)
}
// pnpm runs scripts from the workspace root; INIT_CWD is where the user typed the command
const base = process.env['INIT_CWD'] ?? process.cwd()
console.log(`backend: ${backend.name}`)
const folder = resolve(base, dir!)
let reports
try {
  reports = await runGoldenDir(folder, caseRunners, backend)
} catch (e) {
  console.error(`cannot read golden cases from ${folder}: ${(e as Error).message}`)
  process.exit(2)
}
for (const r of reports) console.log(formatReport(r))
console.log(summaryLine(reports))
process.exit(reports.length > 0 && reports.every((r) => r.ok) ? 0 : 1)
