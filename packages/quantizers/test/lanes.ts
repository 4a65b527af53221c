import { afterAll, describe, it } from 'vitest'
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

/**
 * One describe block per lane: `body` gets the lane's backend; a lane that cannot run here is
 * registered as a skipped test whose title (and a warning) gives the reason.
 */
export function describeLanes<L extends Lane>(suite: string, lanes: readonly L[], title: (lane: L) => string, body: (backend: Backend, lane: L) => void): void {
  for (const lane of lanes)
    describe(title(lane), async () => {
      const made = await lane.make()
      if ('skip' in made) {
        console.warn(`[quantizers/${suite}] ${lane.name} is SKIPPED: ${made.skip}`)
        it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
        return
      }
      afterAll(() => made.dispose?.())
      body(made, lane)
    })
}
