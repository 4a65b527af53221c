export { gpuJsBackend, gpuJsCaps, gpuJsUnavailable, gpuJsModes } from './backend.js'
export type { GpuJsBackend, GpuJsMode, GpuJsStats } from './backend.js'
export { kernelSource, fmtNum } from './codegen.js'
export type { KernelSource } from './codegen.js'
