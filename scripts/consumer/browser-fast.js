// Browser bundle: backend-fast (no Node modules in the page; one thread, WebAssembly SIMD kernels).
import { fastBackend } from '@tessera/backend-fast'
import { checkBackend } from './workload.js'

export async function run() {
  const backend = fastBackend()
  try {
    return [await checkBackend('browser fast', backend)]
  } finally {
    backend.dispose?.()
  }
}
