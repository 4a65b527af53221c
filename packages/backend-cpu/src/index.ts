// The reference evaluator lives in core; these re-exports keep backend-cpu's names working.
export { interpretProgram, applyPrim, referenceImpls as cpuImpls, referenceCaps, roundHalfEven, viewCopy } from '@tessera/core'
export { cpuBackend } from './backend.js'
export { fusedCpuBackend, fusedCpuCaps, runPlan, checkGatherIndices } from './plan.js'
