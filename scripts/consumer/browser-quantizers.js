// Browser bundle: the quantizers with the reference backend, and safetensors without Node's Buffer.
import { fusedCpuBackend } from '@tessera/backend-cpu'
import { checkBackend, safetensorsRoundTrip } from './workload.js'

export async function run() {
  return [await checkBackend('browser fused-cpu', fusedCpuBackend()), safetensorsRoundTrip()]
}
