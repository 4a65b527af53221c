import { interpretProgram } from '@tessera/backend-cpu'
import { describeConformance } from '@tessera/core/testing'
import { fastBackend } from '../src/index.js'

// Both plans: generated JS alone, and with the WebAssembly distance+argmin kernel.
describeConformance('backend-fast (js)', async () => fastBackend({ wasm: false }), { reference: interpretProgram, numRuns: 30 })
describeConformance('backend-fast (js+wasm)', async () => fastBackend({ threads: 1 }), { reference: interpretProgram, numRuns: 30 })
