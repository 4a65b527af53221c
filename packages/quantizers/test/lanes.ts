import type { Backend } from '@tessera/core'
import type { GpuJsMode } from '@tessera/backend-gpujs'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'

/** A backend a cross-backend test runs on, or the reason it cannot run on this machine. */
export interface Lane {
  readonly name: string
  make(): Promise<Backend | { readonly skip: string }>
}

/** A gpu.js mode as a lane: skipped, with gpu.js's own reason, where the mode cannot run here. */
export const gpuJsLane = (mode: GpuJsMode): Lane => ({
  name: `gpujs-${mode}`,
  async make() {
    const why = await gpuJsUnavailable(mode)
    return why ? { skip: `gpujs ${mode}: ${why}` } : gpuJsBackend(mode)
  },
})
