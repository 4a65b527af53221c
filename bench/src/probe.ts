/**
 * `pnpm bench:probe <first-call|machine-steady|w1-parts|int-dots|apply-into> [args...] [--repeat N]`: bundles one of src/probes/ as
 * the bench's child is bundled (plain node on an esbuild bundle, so cold code is measured as the
 * bench measures it) and runs it in N fresh processes (default 3), printing each one's line.
 */
import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { bundleEntry } from './bundle.js'
import { NODE_FLAGS } from './child.js'

const PROBES: Readonly<Record<string, readonly string[]>> = {
  'first-call': [],
  'machine-steady': [],
  // relaxed SIMD is on by default from Node 22
  'w1-parts': NODE_FLAGS['tessera/fast-wasm-relaxed-2t'] ?? [],
  'int-dots': NODE_FLAGS['tessera/fast-wasm-relaxed-2t'] ?? [],
  'apply-into': [],
}

const here = dirname(fileURLToPath(import.meta.url))
const args = process.argv.slice(2)
const at = args.indexOf('--repeat')
const repeat = at >= 0 ? Number(args.splice(at, 2)[1]) : 3
const [name, ...rest] = args
const flags = name !== undefined ? PROBES[name] : undefined
if (!flags || !Number.isInteger(repeat) || repeat < 1) {
  console.error(`usage: pnpm bench:probe <${Object.keys(PROBES).join('|')}> [args...] [--repeat N >= 1]`)
  process.exit(2)
}
// under bench/ so the bundle resolves bench's external packages, as the child's does
const cache = join(here, '..', 'node_modules', '.cache')
mkdirSync(cache, { recursive: true })
const out = mkdtempSync(join(cache, 'probe-'))
try {
  const file = await bundleEntry(here, join(here, 'probes', `${name}.ts`), out, name)
  for (let i = 0; i < repeat; i++) {
    const r = spawnSync(process.execPath, [...flags, file, ...rest], { stdio: 'inherit' })
    if (r.status !== 0) process.exitCode = r.status ?? 1
  }
} finally {
  rmSync(out, { recursive: true, force: true })
}
