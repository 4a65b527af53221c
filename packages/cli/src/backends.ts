import type { Backend } from '@tessera/core'
import { cpuBackend, fusedCpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import type { GpuJsMode } from '@tessera/backend-gpujs'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'

/** A backend, or why it cannot run on this machine (no GL, no WebAssembly, ...). */
export type Made = { readonly backend: Backend } | { readonly unavailable: string }

const gpuJs =
  (mode: GpuJsMode) =>
  async (): Promise<Made> => {
    const why = await gpuJsUnavailable(mode)
    return why ? { unavailable: why } : { backend: gpuJsBackend(mode) }
  }

/**
 * The backends a command can name, by their command-line name. This package is the one place
 * that imports every backend, so that the libraries need not (a user installs only the backend it runs).
 * gpu.js's browser modes (webgl2, webgpu) are left out: this command runs in Node.
 */
export const backendMakers: Readonly<Record<string, () => Promise<Made>>> = {
  cpu: async () => ({ backend: cpuBackend() }),
  'fused-cpu': async () => ({ backend: fusedCpuBackend() }),
  fast: async () => ({ backend: fastBackend() }),
  'gpujs-cpu': gpuJs('cpu'),
  'gpujs-webasm': gpuJs('webasm'),
  'gpujs-headlessgl': gpuJs('headlessgl'),
}

export const backendNames: readonly string[] = Object.keys(backendMakers)
