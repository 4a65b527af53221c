import type { Tensor } from '@tessera/core'
import { quantizerCaseRunner } from '../golden/generic-case.js'
import type { CaseRunner } from '../golden/runner.js'
import type { FSP } from './fsp.js'
import { fsp } from './fsp.js'

/**
 * FSP cases: the forward's four outputs (`quantized, indices, norm_loss, info`), with `info`'s
 * entries as `info.<name>` and the projection hook as `project_in_output`; the level buffers are
 * derived from the config and compared.
 */
export const runFSPCase: CaseRunner = quantizerCaseRunner(fsp, {
  derived: ['_levels', '_basis'],
  outputs: (q: FSP, res, _P, _S, _scope) => {
    const extra = res.extra ?? {}
    const info: Record<string, Tensor> = {}
    for (const [k, v] of Object.entries(extra)) if (k !== 'projected') info[`info.${k}`] = v
    return { ...info, norm_loss: res.loss, indices_to_level_indices: q.indicesToLevelIndices(res.indices) }
  },
})
