import { join } from 'node:path'
import { expect } from 'vitest'
import type { Backend } from '@tessera/core'
import { caseRunners } from '../src/golden/cases.js'
import { FLOAT_TOL } from '../src/golden/compare.js'
import type { CaseReport } from '../src/golden/runner.js'
import type { GoldenFile } from '../src/golden/suite.js'
import { formatReport, runGoldenFiles } from '../src/golden/suite.js'
import { goldenDir, readGoldenDir } from './helpers.js'

/**
 * What every golden case in the repository must report, run by run: 'pass', or the reason the run
 * is unsupported; or the class the library lacks. `derived` counts the buffers the port derives
 * itself and compares with the case's state. A case file missing from this table, or a run whose
 * status changes, fails the test, so a regression cannot pass as "unsupported" and a newly
 * supported case must be recorded here.
 */
type Expectation =
  | { readonly unsupportedClass: string }
  | { readonly runs: Readonly<Record<string, 'pass' | `not implemented: ${string}`>>; readonly derived: number }

export const EXPECTED: Readonly<Record<string, Expectation>> = {
  fsq_8555: { runs: { eval_forward: 'pass' }, derived: 3 },
  fsq_2222_symmetric: { runs: { eval_forward: 'pass' }, derived: 3 },
  lfq_basic: {
    runs: { eval_forward: 'pass', train_inv_temperature_default: 'pass', train_inv_temperature_100: 'pass', train_inv_temperature_1: 'pass' },
    derived: 2,
  },
  rfsq_basic: { runs: { eval_forward: 'pass' }, derived: 2 },
  rvq_basic: { runs: { eval_forward: 'pass', train_frozen_codebook: 'pass' }, derived: 1 },
  vq_euclidean: { runs: { eval_forward: 'pass', train_frozen_codebook: 'pass' }, derived: 0 },
  vq_ema_train: { runs: { train_ema_step: 'pass' }, derived: 0 },
  // next/: classes and options added after the first cases
  grvq_basic: { runs: { eval_forward: 'pass' }, derived: 0 },
  grfsq_basic: { runs: { eval_forward: 'pass' }, derived: 16 },
  simvq_basic: { runs: { eval_forward: 'pass' }, derived: 0 },
  vq_mask: { runs: { eval_masked: 'pass', train_frozen_masked: 'pass', train_ema_masked: 'pass' }, derived: 0 },
  fsp_basic: { runs: { eval_forward: 'pass' }, derived: 2 },
  hierarchical_vq_basic: { runs: { eval_forward: 'pass' }, derived: 0 },
  sequential_basic: { runs: { eval_forward: 'pass' }, derived: 3 },
}

/** Every case file in the repository (the folder and next/), named by path, with its report on `backend`. */
export async function goldenReports(backend: Backend): Promise<{ files: GoldenFile[]; reports: CaseReport[] }> {
  const top = await readGoldenDir(goldenDir)
  const next = (await readGoldenDir(join(goldenDir, 'next'))).map((f) => ({ ...f, name: `next/${f.name}` }))
  const files = [...top, ...next]
  return { files, reports: await runGoldenFiles(files, caseRunners, backend) }
}

/**
 * Checks the reports against EXPECTED: the same cases, each run's status and reason, and for a run
 * that passes exactly the case's outputs and state_after entries checked (none skipped), indices
 * exact and floats within 1e-5.
 */
export function expectAsRecorded(files: readonly GoldenFile[], reports: readonly CaseReport[]): void {
  const lines = reports.map(formatReport).join('\n')
  expect(reports.map((r) => r.name).sort(), lines).toEqual(Object.keys(EXPECTED).sort())
  for (const r of reports) {
    const want = EXPECTED[r.name]!
    const json = JSON.parse(files.find((f) => JSON.parse(f.text).name === r.name)!.text) as {
      runs: { name: string; outputs: Record<string, unknown>; state_after?: Record<string, unknown> }[]
    }
    if ('unsupportedClass' in want) {
      expect(r.status, lines).toBe('unsupported')
      expect(r.unsupported).toBe(`class ${want.unsupportedClass} is not in the library`)
      continue
    }
    expect(r.status, lines).toBe(Object.values(want.runs).every((s) => s === 'pass') ? 'pass' : 'unsupported')
    expect(Object.fromEntries(r.runs.map((run) => [run.name, run.status === 'pass' ? 'pass' : run.reason])), lines).toEqual(want.runs)
    expect(r.checks.filter((k) => k.name.startsWith('state.')).length, `${r.name}: derived buffers compared`).toBe(want.derived)
    for (const run of r.runs) {
      const recorded = json.runs.find((j) => j.name === run.name)!
      const names = run.status === 'pass'
        ? [...Object.keys(recorded.outputs).map((k) => `${run.name}.${k}`), ...Object.keys(recorded.state_after ?? {}).map((k) => `${run.name}.state_after.${k}`)]
        : []
      expect(run.checks.map((k) => k.name).sort(), `${r.name}.${run.name}: outputs checked`).toEqual(names.sort())
    }
    expect(r.indexMismatches, lines).toBe(0)
    expect(r.worstFloat, lines).toBeLessThanOrEqual(FLOAT_TOL)
  }
}
