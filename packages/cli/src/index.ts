// @tessera/cli runs in Node only (it reads folders and loads every backend).
export { main } from './main.js'
export { golden, goldenUsage, readGoldenDir } from './golden.js'
export { backendMakers, backendNames } from './backends.js'
export type { Made } from './backends.js'
export type { Io } from './io.js'
export { EXIT_FAILED, EXIT_OK, EXIT_USAGE } from './io.js'
