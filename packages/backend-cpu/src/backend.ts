import type { Backend, Executable, HostTensor, Program } from '@tessera/core'
import { interpretProgram, referenceCaps, unaliasOutputs } from '@tessera/core'

/** The reference backend: core's evaluator, interpreting programs one primitive at a time. */
export function cpuBackend(): Backend {
  return {
    name: 'cpu-reference',
    caps: referenceCaps,
    compile(program: Program): Executable {
      return {
        // the evaluator passes unchanged inputs through as outputs: copy those, the caller owns its arrays
        run: async (inputs: readonly HostTensor[]) => unaliasOutputs(inputs, interpretProgram(program, inputs)),
        dispose() {},
      }
    },
  }
}
