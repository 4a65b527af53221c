import type { Backend, Caps, Executable, HostTensor, Program } from '@tessera/core'
import { interpretProgram } from './interpret.js'

export const referenceCaps: Caps = {
  exactIntLimit: 2 ** 31,
  strictNaN: true,
  maxKernelArgs: Infinity,
  maxTextureSize: Infinity,
  atol: 0,
  rtol: 0,
  transcendentalRtol: 0,
  fuses: false,
}

/** The reference backend: interprets programs one primitive at a time. */
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
