import type { Backend, Executable, HostTensor, Program } from '@tessera/core'
import { disposedError, interpretProgram, referenceCaps, unaliasOutputs } from '@tessera/core'

/** The reference backend: core's evaluator, interpreting programs one primitive at a time. */
export function cpuBackend(): Backend {
  let disposed = false
  const name = 'cpu-reference'
  return {
    name,
    caps: referenceCaps,
    compile(program: Program): Executable {
      if (disposed) throw disposedError(name)
      return {
        // the evaluator passes unchanged inputs through as outputs: copy those, the caller owns its arrays
        run: async (inputs: readonly HostTensor[]) => {
          if (disposed) throw disposedError(name)
          return unaliasOutputs(inputs, interpretProgram(program, inputs))
        },
        dispose() {},
      }
    },
    dispose: async () => {
      disposed = true
    },
  }
}
