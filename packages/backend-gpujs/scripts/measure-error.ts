/**
 * Measure how far each gpu.js mode (Node modes; test/measure-error.browser.test.ts does the browser
 * modes) is from the reference, per primitive and on a few
 * quantizer-shaped programs, so the tolerances in `gpuJsCaps` are numbers, not guesses.
 *
 *   xvfb-run -a npx tsx --conditions=@tessera/source packages/backend-gpujs/scripts/measure-error.ts \
 *     [--modes cpu,webasm,headlessgl] [--runs 150] [--seed 20261122] [--json out.json]
 *
 * Inputs are the conformance suite's own generators (`primCases`, `randomProgramArb`), sampled
 * with a fixed seed. For each float output element the error is e = |got - want| and its scale
 * s = |want| (for sums and matmul: max(|want|, the same program on |inputs|), which is what the
 * suite's 'accumulate' tolerance uses). Reported per primitive:
 *   abs<1: worst e over elements with s < 1 (what atol must cover),
 *   rel>=1: worst e / s over elements with s >= 1 (what the relative term must cover),
 *   need: the smallest r with e <= atol + r * s for every element, at the given atol.
 * A tolerance atol = A, rtol = R then covers every element when A >= abs<1 and R >= rel>=1.
 * Integer and bool outputs must match exactly: any difference is counted as a mismatch.
 */
import { writeFileSync } from 'node:fs'
import type { GpuJsMode } from '../src/index.js'
import { gpuJsBackend, gpuJsUnavailable } from '../src/index.js'
import { measureBackend } from './measure-core.js'

const argv = process.argv.slice(2)
const opt = (name: string, dflt: string) => {
  const i = argv.indexOf(`--${name}`)
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : dflt
}
const modes = opt('modes', 'cpu,webasm,headlessgl').split(',') as GpuJsMode[]
const numRuns = Number(opt('runs', '150'))
const seed = Number(opt('seed', '20261122'))
const jsonOut = opt('json', '')
const onlyPrims = opt('prims', '') ? new Set(opt('prims', '').split(',')) : null

const report: Record<string, unknown> = { numRuns, seed, modes: {} }
for (const mode of modes) {
  const why = await gpuJsUnavailable(mode)
  if (why) {
    console.log(`\n## ${mode}: SKIPPED (${why})`)
    ;(report['modes'] as Record<string, unknown>)[mode] = { skipped: why }
    continue
  }
  const backend = gpuJsBackend(mode)
  ;(report['modes'] as Record<string, unknown>)[mode] = await measureBackend(backend, { numRuns, seed, onlyPrims, log: (l) => console.log(l) })
  backend.dispose()
}
if (jsonOut) writeFileSync(jsonOut, JSON.stringify(report, null, 1))
// gl keeps the process alive
process.exit(0)
