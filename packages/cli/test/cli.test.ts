import { existsSync } from 'node:fs'
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import type { Io } from '../src/index.js'
import { EXIT_FAILED, EXIT_OK, EXIT_USAGE, backendNames, main } from '../src/index.js'

// the golden cases the quantizers tests use, kept in the repository (packages/quantizers/test/golden)
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
const goldenDir = resolve(repoRoot, 'packages/quantizers/test/golden')

/** Runs `tessera <argv>` in-process, collecting what it prints. */
async function tessera(argv: readonly string[], cwd = repoRoot) {
  const out: string[] = [], err: string[] = []
  const io: Io = { cwd, out: (l) => out.push(l), err: (l) => err.push(l) }
  const status = await main(argv, io)
  return { status, out, err }
}

const temps: string[] = []
afterAll(async () => {
  for (const t of temps) await rm(t, { recursive: true, force: true })
})

describe('tessera golden', () => {
  it('runs every case of the golden folder on the CPU reference: all pass', async () => {
    expect(existsSync(goldenDir), `expected reference cases at ${goldenDir}`).toBe(true)
    const r = await tessera(['golden', goldenDir])
    expect(r.err).toEqual([])
    expect(r.out[0]).toMatch(/^backend: cpu/)
    const cases = r.out.slice(1, -1)
    expect(cases.length).toBeGreaterThan(0)
    for (const line of cases) expect(line).toMatch(/^PASS /)
    expect(r.out.at(-1)).toBe(`${cases.length} passed, 0 failed`)
    expect(r.status).toBe(EXIT_OK)
  })

  it('resolves the folder against the caller\'s folder, takes --backend anywhere, and fails on a bad case', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-golden-'))
    temps.push(dir)
    await copyFile(join(goldenDir, 'fsq_8555.json'), join(dir, 'fsq_8555.json'))
    await writeFile(join(dir, 'broken.json'), '{ not json')
    const r = await tessera(['golden', 'cases', '--backend', 'fused-cpu'], dirname(join(dir, 'cases')))
    expect(r.status).toBe(EXIT_USAGE) // <tmp>/cases does not exist
    expect(r.err[0]).toMatch(/^cannot read golden cases from .*cases/)

    const ok = await tessera(['golden', '--backend', 'fused-cpu', '.'], dir)
    expect(ok.out[0]).toMatch(/^backend: /)
    expect(ok.out[1]).toMatch(/^FAIL broken\.json/) // files run in name order
    expect(ok.out[2]).toMatch(/^PASS fsq_8555 \(FSQ\)/)
    expect(ok.out[3]).toBe('1 passed, 1 failed')
    expect(ok.status).toBe(EXIT_FAILED)
  })

  it('next/: every case of the classes and options added after the first cases passes (exit 0)', async () => {
    const r = await tessera(['golden', join(goldenDir, 'next')])
    expect(r.err).toEqual([])
    const cases = r.out.slice(1, -1)
    expect(cases.length).toBeGreaterThan(0)
    for (const line of cases) expect(line).toMatch(/^PASS /)
    expect(cases.find((l) => l.includes('vq_mask'))).toMatch(/^PASS vq_mask \(VectorQuantize\)/)
    expect(cases.find((l) => l.includes('hierarchical_vq_basic'))).toMatch(/^PASS hierarchical_vq_basic \(HierarchicalVQ\)/)
    expect(cases.find((l) => l.includes('fsp_basic'))).toMatch(/^PASS fsp_basic \(FSP\)/)
    expect(r.out.at(-1)).toBe(`${cases.length} passed, 0 failed`)
    expect(r.status).toBe(EXIT_OK)
  })

  it('a class the library lacks is reported UNSUPPORTED, named, and is not a pass', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-golden-'))
    temps.push(dir)
    const text = await readFile(join(goldenDir, 'fsq_8555.json'), 'utf8')
    await writeFile(join(dir, 'unknown.json'), text.replace('"class": "FSQ"', '"class": "NoSuchQuantizer"'))
    const r = await tessera(['golden', dir])
    expect(r.out[1]).toBe('UNSUPPORTED fsq_8555 (NoSuchQuantizer): class NoSuchQuantizer is not in the library')
    expect(r.out.at(-1)).toBe('0 passed, 0 failed, 1 unsupported')
    expect(r.status).toBe(EXIT_FAILED)
  })

  it('an empty folder is not a pass', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tessera-golden-'))
    temps.push(dir)
    const r = await tessera(['golden', dir])
    expect(r.out.at(-1)).toBe('0 passed, 0 failed')
    expect(r.status).toBe(EXIT_FAILED)
  })

  it('a missing folder argument, an unknown backend or command prints the usage', async () => {
    for (const argv of [['golden'], ['golden', '--backend', 'nope', goldenDir], ['golden', goldenDir, '--backend'], ['nope'], []]) {
      const r = await tessera(argv)
      expect(r.status, argv.join(' ')).toBe(EXIT_USAGE)
      expect(r.err.join('\n')).toContain(`tessera golden [--backend ${backendNames.join('|')}] <dir>`)
    }
  })
})
