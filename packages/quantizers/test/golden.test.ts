import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import { caseRunners } from '../src/golden/cases.js'
import { formatReport, runGoldenFiles, summaryLine } from '../src/golden/suite.js'
import { parseGoldenCase } from '../src/golden/format.js'
import { runCase } from '../src/golden/runner.js'
import { compileCache } from '../src/run.js'
import { backends, goldenDir, readGoldenDir } from './helpers.js'

/** Cases that must be in the folder; every case there must pass. */
const MUST_PASS = ['fsq_8555', 'fsq_2222_symmetric', 'lfq_basic', 'rfsq_basic', 'vq_euclidean', 'vq_ema_train', 'rvq_basic']

describe.each(backends.map((b) => [b.name, b] as const))('golden cases from the reference on %s', (_name, backend) => {
  it('the golden folder is there', () => {
    expect(existsSync(goldenDir), `expected reference cases at ${goldenDir}`).toBe(true)
  })

  it('every case passes (indices exact, floats within 1e-5)', async () => {
    const reports = await runGoldenFiles(await readGoldenDir(goldenDir), caseRunners, backend)
    const lines = reports.map(formatReport)
    for (const name of MUST_PASS) {
      const r = reports.find((x) => x.name === name)
      expect(r, `case ${name} missing from ${goldenDir}`).toBeDefined()
      expect(r!.ok, lines.join('\n')).toBe(true)
      expect(r!.indexMismatches).toBe(0)
      expect(r!.worstFloat).toBeLessThanOrEqual(1e-5)
    }
    expect(summaryLine(reports)).toBe(`${reports.length} passed, 0 failed`)
  })

  it('a case whose class or option the library lacks fails, and a perturbed output is caught', async () => {
    const { readFile } = await import('node:fs/promises')
    const text = await readFile(resolve(goldenDir, 'fsq_8555.json'), 'utf8')
    const cache = compileCache()
    const renamed = E.getOrElseW(() => undefined)(parseGoldenCase(text.replace('"class": "FSQ"', '"class": "NoSuchQuantizer"')))!
    expect((await runCase(renamed, caseRunners, { backend, cache })).ok).toBe(false)
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
    expect(p.indexMismatches).toBe(1)
    expect(p.checks.find((c) => c.name === 'eval_forward.quantized')!.mismatches).toBe(1)
    cache.dispose()
  })
})
