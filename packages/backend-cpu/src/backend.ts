import type { Backend, Executable, HostTensor, Program } from '@tessera/core'
import { interpretProgram, referenceCaps } from '@tessera/core'

/** The reference backend: core's evaluator, interpreting programs one primitive at a time. */
export function cpuBackend(): Backend {
  return {
    name: 'cpu-reference',
    caps: referenceCaps,
    compile(program: Program): Executable {
      return {
        run: async (inputs: readonly HostTensor[]) => interpretProgram(program, inputs),
        dispose() {},
      }
    },
  }
}
