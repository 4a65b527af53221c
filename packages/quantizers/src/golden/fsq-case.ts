import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { makeFSQ } from '../fsq/fsq.js'
import { decodeFSQ } from '../fsq/config.js'
import type { Named } from '../quantizer.js'
import { runOnHost } from '../run.js'
import type { CaseRunner, RunProduct } from './runner.js'
import { loadCaseState, runInput } from './runner.js'

/** FSQ cases: forward outputs, indices_to_codes, level indices, codes_to_indices, implicit codebook. */
export const runFSQCase: CaseRunner = async (c, ctx) => {
  const cfg = decodeFSQ(c.kwargs)
  if (E.isLeft(cfg)) return cfg
  const q = makeFSQ(cfg.right)
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
        const codes = res.extra!['codes']!
        const [b, n] = codes.shape as [number, number]
        return {
          quantized: res.quantized,
          indices: res.indices,
          indices_to_codes: q.indicesToCodes(P, res.indices, S),
          indices_to_level_indices: q.indicesToLevelIndices(res.indices),
          codes_before_project_out: codes,
          'codes_to_indices(codes_before_project_out)': q.codesToIndices(codes.reshape([b, n, cfg.right.num_codebooks, cfg.right.codebook_dim])),
          project_in_output: res.extra!['projected']!,
        }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    runs.push({ outputs: r.right })
  }
  return E.right({ runs, derived })
}
