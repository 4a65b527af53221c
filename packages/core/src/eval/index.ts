export type { Impl, ImplTable } from './impl.js'
export { referenceCaps, referenceImpls, applyPrim, interpretProgram } from './interpret.js'
export { viewCopy, transposeStrides, broadcastStrides } from './view.js'
