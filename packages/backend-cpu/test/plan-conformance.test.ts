import { describeConformance } from '@tessera/core/testing'
import { fusedCpuBackend } from '../src/index.js'

// The fused plan must agree with the reference exactly (its caps have zero tolerances): any
// difference is a lowering bug. The second run forces kernel splitting with a tiny argument cap (3: where and 3-way concat read 3 buffers themselves).
describeConformance('backend-cpu fused plan', async () => fusedCpuBackend(), { numRuns: 30 })
describeConformance('backend-cpu fused plan, 3 args per kernel', async () => fusedCpuBackend({ maxKernelArgs: 3 }), { numRuns: 15 })
