import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import { caseRunners } from '../src/golden/cases.js'
import { formatReport, summaryLine } from '../src/golden/suite.js'
import { parseGoldenCase } from '../src/golden/format.js'
import { runCase } from '../src/golden/runner.js'
import { compileCache } from '../src/run.js'
import { EXPECTED, expectAsRecorded, goldenReports } from './golden-expected.js'
import { backends, goldenDir } from './helpers.js'

describe.each(backends.map((b) => [b.name, b] as const))('golden cases from the reference on %s', (_name, backend) => {
  it('the golden folder is in the repository', () => {
    expect(existsSync(goldenDir), `expected reference cases at ${goldenDir}`).toBe(true)
    expect(existsSync(resolve(goldenDir, 'next')), 'expected next/ beside them').toBe(true)
  })

  it('every case reports as recorded: runs pass (indices exact, floats within 1e-5) or are unsupported for the reason given', async () => {
    const { files, reports } = await goldenReports(backend)
    expectAsRecorded(files, reports)
    const top = reports.filter((r) => !files.find((f) => JSON.parse(f.text).name === r.name)!.name.startsWith('next/'))
    expect(summaryLine(top)).toBe(`${top.length} passed, 0 failed`)
    // the cases EXPECTED pins as unsupported (a class, or a run, the library lacks)
    const unsupported = Object.values(EXPECTED).filter((w) => 'unsupportedClass' in w || Object.values(w.runs).some((s) => s !== 'pass')).length
    expect(unsupported).toBe(0)
    expect(summaryLine(reports)).toBe(`${reports.length - unsupported} passed, 0 failed${unsupported ? `, ${unsupported} unsupported` : ''}`)
  })

  it('a case whose class or option the library lacks fails, and a perturbed output is caught', async () => {
    const { readFile } = await import('node:fs/promises')
    const text = await readFile(resolve(goldenDir, 'fsq_8555.json'), 'utf8')
    const cache = compileCache()
    const renamed = E.getOrElseW(() => undefined)(parseGoldenCase(text.replace('"class": "FSQ"', '"class": "NoSuchQuantizer"')))!
    const unknown = await runCase(renamed, caseRunners, { backend, cache })
    expect(unknown.ok).toBe(false)
    expect(formatReport(unknown)).toBe('UNSUPPORTED fsq_8555 (NoSuchQuantizer): class NoSuchQuantizer is not in the library')
    const json = JSON.parse(text)
    json.constructor.kwargs.no_such_option = true
    const withOption = E.getOrElseW(() => undefined)(parseGoldenCase(JSON.stringify(json)))!
    const r = await runCase(withOption, caseRunners, { backend, cache })
    expect(r.ok).toBe(false)
    expect(r.error).toMatch(/unknown key "no_such_option"/)
    json.constructor.kwargs = { levels: [8, 5, 5, 5] }
    json.runs[0].outputs.indices.data[3] += 1
    json.runs[0].outputs.quantized.data[0] += 2e-5
    const perturbed = E.getOrElseW(() => undefined)(parseGoldenCase(JSON.stringify(json)))!
    const p = await runCase(perturbed, caseRunners, { backend, cache })
    expect(p.ok).toBe(false)
    expect(p.status).toBe('fail')
    expect(p.runs.map((run) => run.status)).toEqual(['fail'])
    expect(p.indexMismatches).toBe(1)
    expect(p.checks.find((c) => c.name === 'eval_forward.quantized')!.mismatches).toBe(1)
    cache.dispose()
  })
})
