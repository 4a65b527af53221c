import { describeConformance } from '@tessera/core/testing'
import { gpuJsBackend, gpuJsUnavailable } from '../src/index.js'
import type { GpuJsMode } from '../src/index.js'

// Node modes. headlessgl needs the gl build and an X display (scripts/test.mjs runs xvfb-run).
for (const mode of ['cpu', 'webasm', 'headlessgl'] as GpuJsMode[]) {
  describeConformance(
    `gpujs ${mode}`,
    async () => {
      const why = await gpuJsUnavailable(mode)
      return why ? { skip: `gpujs ${mode}: ${why}` } : gpuJsBackend(mode)
    },
    { numRuns: 12, timeout: 120_000 },
  )
}
