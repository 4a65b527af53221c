export { interpretProgram, applyPrim, cpuImpls, roundHalfEven } from './interpret.js'
export { cpuBackend, referenceCaps } from './backend.js'
export { viewCopy } from './view.js'
