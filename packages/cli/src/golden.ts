import { readFile, readdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { GoldenFile } from '@tessera/quantizers'
import { caseRunners, formatReport, runGoldenFiles, summaryLine } from '@tessera/quantizers'
import { backendMakers, backendNames } from './backends.js'
import type { Io } from './io.js'
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE } from './io.js'

export const goldenUsage = `usage: tessera golden [--backend ${backendNames.join('|')}] <dir>`

/** The `*.json` golden case files of a folder. */
export async function readGoldenDir(dir: string): Promise<GoldenFile[]> {
  const names = (await readdir(dir)).filter((f) => f.endsWith('.json'))
  return Promise.all(names.map(async (name) => ({ name, text: await readFile(join(dir, name), 'utf8') })))
}

/**
 * `tessera golden [--backend <name>] <dir>`: run every reference case in <dir> (cases recorded from
 * vector-quantize-pytorch; the repository's are in packages/quantizers/test/golden, format in its
 * README.md) on one backend, one line per case (PASS, FAIL or UNSUPPORTED), then "N passed, N
 * failed[, N unsupported]". Exits 0 only when there are cases and all pass: a case the library
 * cannot run is not a pass.
 */
export async function golden(args: readonly string[], io: Io): Promise<number> {
  const at = args.indexOf('--backend')
  const backendName = at >= 0 ? args[at + 1] : 'cpu'
  const dir = args.filter((_, i) => at < 0 || (i !== at && i !== at + 1))[0]
  const make = backendName === undefined ? undefined : backendMakers[backendName]
  if (!dir || !make) {
    io.err(goldenUsage)
    return EXIT_USAGE
  }
  const made = await make()
  if ('unavailable' in made) {
    io.err(`golden: backend ${backendName} cannot run here: ${made.unavailable}`)
    return EXIT_USAGE
  }
  const { backend } = made
  try {
    io.out(`backend: ${backend.name}`)
    const folder = resolve(io.cwd, dir)
    let files: GoldenFile[]
    try {
      files = await readGoldenDir(folder)
    } catch (e) {
      io.err(`cannot read golden cases from ${folder}: ${(e as Error).message}`)
      return EXIT_USAGE
    }
    const reports = await runGoldenFiles(files, caseRunners, backend)
    for (const r of reports) io.out(formatReport(r))
    io.out(summaryLine(reports))
    return reports.length > 0 && reports.every((r) => r.ok) ? EXIT_OK : EXIT_FAILED
  } finally {
    backend.dispose?.()
  }
}
