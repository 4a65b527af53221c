// Named records, initialisers and the linear layer live in core (the quantizers use them too, and
// may depend only on core); they are re-exported here so a model needs one import.
export type { LinearParams, Named, WeightInit } from '@tessera/core'
export { fanInUniform, fans, initLinear, kaimingUniform, linear, mapNamed, prefixed, scoped, xavierUniform } from '@tessera/core'
export * from './activations.js'
export * from './layers.js'
export * from './config.js'
export * from './optim.js'
