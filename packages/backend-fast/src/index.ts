export { fastBackend, fastCaps } from './backend.js'
export type { FastBackendOptions } from './backend.js'
export { planProgram } from './plan.js'
export type { Plan, Step } from './plan.js'
