export * from './kernel.js'
export * from './plan.js'
export { lowerProgram } from './fuse.js'
