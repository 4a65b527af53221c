import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

// fast-check and vitest are optional peers of @tessera/core: only the testing entry may import them.
const src = resolve(dirname(fileURLToPath(import.meta.url)), '../src')

/** Every module the main entry reaches through relative imports, with the packages each imports. */
function reachable(entry: string): Map<string, string[]> {
  const seen = new Map<string, string[]>()
  const visit = (file: string) => {
    if (seen.has(file)) return
    const text = readFileSync(file, 'utf8')
    const specs = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/g)].map((m) => m[1]!)
    seen.set(file, specs.filter((s) => !s.startsWith('.')))
    for (const s of specs) if (s.startsWith('.')) visit(resolve(dirname(file), s.replace(/\.js$/, '.ts')))
  }
  visit(entry)
  return seen
}

describe('the main entry', () => {
  it('never imports fast-check or vitest (only @tessera/core/testing does)', () => {
    const modules = reachable(resolve(src, 'index.ts'))
    expect(modules.size).toBeGreaterThan(10)
    for (const [file, packages] of modules) {
      expect(file.includes('/testing/'), file).toBe(false)
      for (const p of packages) expect(p, `${file} imports ${p}`).not.toMatch(/^(fast-check|vitest|@fast-check\/)/)
    }
  })
})
