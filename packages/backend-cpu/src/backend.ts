import type { Backend, Executable, HostTensor, Program, RunOptions } from '@tessera/core'
import { checkIntoOrThrow, disposedError, interpretProgram, referenceCaps, unaliasOutputs, writeInto } from '@tessera/core'

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
        run: async (inputs: readonly HostTensor[], options?: RunOptions) => {
          if (disposed) throw disposedError(name)
          checkIntoOrThrow(name, () => program.outputs.map((v) => v.aval), inputs, options?.into)
          return writeInto(unaliasOutputs(inputs, interpretProgram(program, inputs)), options?.into)
        },
        dispose() {},
      }
    },
    dispose: async () => {
      disposed = true
    },
  }
}
