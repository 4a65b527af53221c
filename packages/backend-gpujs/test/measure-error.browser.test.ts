import { describe, it } from 'vitest'
import type { GpuJsMode } from '../src/index.js'
import { gpuJsBackend, gpuJsUnavailable } from '../src/index.js'
import { measureBackend } from '../scripts/measure-core.js'

// The browser half of scripts/measure-error.ts (the tolerance table in docs/BACKENDS.md). It takes
// minutes, so it runs only when asked for:
//   VITE_TESSERA_MEASURE=1 pnpm test --project browser packages/backend-gpujs/test/measure-error.browser.test.ts
const asked = (import.meta as unknown as { env?: Record<string, string | undefined> }).env?.['VITE_TESSERA_MEASURE'] === '1'

describe.skipIf(!asked)('measured error of the browser modes (run with VITE_TESSERA_MEASURE=1)', () => {
  for (const mode of ['webgl2', 'webgpu'] as GpuJsMode[])
    it(
      mode,
      async () => {
        const why = await gpuJsUnavailable(mode)
        if (why) {
          console.log(`## ${mode}: SKIPPED (${why})`)
          return
        }
        const backend = gpuJsBackend(mode)
        const lines: string[] = []
        await measureBackend(backend, { numRuns: 300, seed: 20261122, log: (l) => lines.push(l) })
        console.log(lines.join('\n'))
        backend.dispose()
      },
      1_200_000,
    )
})
