// Helpers that models and quantizers share (parameter naming, linear layers, losses, random keys):
// one definition here, since @tessera/quantizers and @tessera/nn may both depend only on core.
export * from './named.js'
export * from './init.js'
export * from './linear.js'
export * from './entropy.js'
export * from './ranks.js'
export * from './fold-key.js'
export * from './straight-through.js'
