import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import type { Named } from '../quantizer.js'
import { decodeResidualFSQ, makeResidualFSQ } from '../residual/residual-fsq.js'
import { runOnHost } from '../run.js'
import type { CaseRunner, RunProduct } from './runner.js'
import { loadCaseState, runInput } from './runner.js'

/** ResidualFSQ cases: output, indices, all codes, output from indices, per-layer inputs and outputs. */
export const runResidualFSQCase: CaseRunner = async (c, ctx) => {
  const cfg = decodeResidualFSQ(c.kwargs)
  if (E.isLeft(cfg)) return cfg
  const q = makeResidualFSQ(cfg.right)
  const loaded = loadCaseState(q, c.state)
  if (E.isLeft(loaded)) return loaded
  const { params, state, derived } = loaded.right
  const runs: RunProduct[] = []
  for (const run of c.runs) {
    const x = runInput(run)
    if (E.isLeft(x)) return x
    const r = await runOnHost(
      ctx.backend,
      [params, state, x.right] as const,
      (p, s, xs) => {
        const P = p as Named<Tensor>, S = s as Named<Tensor>
        const res = q.apply(P, S, xs as Tensor, { training: run.mode === 'train' })
        return {
          ...res.extra,
          quantized: res.quantized,
          indices: res.indices,
          all_codes: q.codesFromIndices(P, res.indices, S),
          get_output_from_indices: q.indicesToCodes(P, res.indices, S),
        }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    runs.push({ outputs: r.right as Named<import('@tessera/core').HostTensor> })
  }
  return E.right({ runs, derived: { scales: derived['scales']!, soft_clamp_input_value: derived['soft_clamp_input_value']! } })
}
