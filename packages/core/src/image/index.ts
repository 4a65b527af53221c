// Image operations over NCHW tensors, composed from IR primitives (docs/ARCHITECTURE.md, "Composite operations").
export * from './conv2d.js'
export * from './resize.js'
export * from './pool.js'
