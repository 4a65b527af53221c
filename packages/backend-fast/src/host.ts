/**
 * What the host offers for threads, looked up when first needed, never at module top level, so
 * the package bundles and runs in a browser (on one thread there, until Web Workers are wired).
 */
type WorkerThreads = typeof import('node:worker_threads')
type Os = typeof import('node:os')

interface NodeProcess {
  getBuiltinModule?(id: string): unknown
}

const nodeModule = <T>(id: string): T | undefined => {
  const p = (globalThis as { process?: NodeProcess }).process
  return p?.getBuiltinModule?.(id) as T | undefined
}

/** Node's worker_threads module, or undefined where the host has none (a browser). */
export const nodeWorkerThreads = (): WorkerThreads | undefined => nodeModule<WorkerThreads>('node:worker_threads')

/**
 * Whether the host has Node's worker threads, without loading the module: Node's own JS for
 * worker_threads is not in its startup snapshot and costs milliseconds to load, while a small
 * program never starts a worker. A host with `process.getBuiltinModule` is Node (or
 * Node-compatible) and has node:worker_threads; where it has not after all, starting a worker
 * throws (wasm/threads.ts).
 */
export const hasNodeWorkerThreads = (): boolean =>
  typeof (globalThis as { process?: NodeProcess }).process?.getBuiltinModule === 'function'

/** Threads the hardware runs at once (1 where the host does not say). */
export function hardwareThreads(): number {
  const os = nodeModule<Os>('node:os')
  if (os) return os.availableParallelism()
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator
  return Math.max(1, nav?.hardwareConcurrency ?? 1)
}
