// Browser bundle: backend-gpujs on WebGL2 and WebGPU (gpu.js's browser build, picked by its `browser` field).
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import { checkBackend } from './workload.js'

export async function run() {
  const lines = []
  for (const mode of ['webgl2', 'webgpu']) {
    const why = await gpuJsUnavailable(mode)
    if (why) throw new Error(`gpu.js ${mode} unavailable in this browser: ${why}`)
    const backend = gpuJsBackend(mode)
    try {
      lines.push(await checkBackend(`browser gpujs-${mode}`, backend))
    } finally {
      backend.dispose?.()
    }
  }
  return lines
}
