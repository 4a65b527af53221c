export { interpretProgram, applyPrim, cpuImpls, roundHalfEven } from './interpret.js'
export { cpuBackend, referenceCaps } from './backend.js'
export { viewCopy } from './view.js'
export { fusedCpuBackend, fusedCpuCaps, runPlan, checkGatherIndices } from './plan.js'
