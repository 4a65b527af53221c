import { describeConformance } from '@tessera/core/testing'
import { gpuJsBackend, gpuJsUnavailable } from '../src/index.js'
import type { GpuJsMode } from '../src/index.js'

// Browser modes, in headless Chromium (vitest browser project). webgpu needs --enable-unsafe-webgpu.
for (const mode of ['webgl2', 'webgpu'] as GpuJsMode[]) {
  describeConformance(
    `gpujs ${mode}`,
    async () => {
      const why = await gpuJsUnavailable(mode)
      return why ? { skip: `gpujs ${mode}: ${why}` } : gpuJsBackend(mode)
    },
    { numRuns: 8, timeout: 120_000 },
  )
}
