import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { decodeLFQ } from '../lfq/config.js'
import { makeLFQ } from '../lfq/lfq.js'
import type { Named } from '../quantizer.js'
import { runOnHost } from '../run.js'
import type { CaseRunner, RunProduct } from './runner.js'
import { loadCaseState, runInput } from './runner.js'

/** LFQ cases: forward in eval and train (forward kwargs such as inv_temperature go into the config). */
export const runLFQCase: CaseRunner = async (c, ctx) => {
  const base = decodeLFQ(c.kwargs)
  if (E.isLeft(base)) return base
  const loaded = loadCaseState(makeLFQ(base.right), c.state)
  if (E.isLeft(loaded)) return loaded
  const { params, state, derived } = loaded.right
  const runs: RunProduct[] = []
  for (const run of c.runs) {
    const cfg = decodeLFQ({ ...c.kwargs, ...run.callKwargs })
    if (E.isLeft(cfg)) return cfg
    const q = makeLFQ(cfg.right)
    const x = runInput(run)
    if (E.isLeft(x)) return x
    const r = await runOnHost(
      ctx.backend,
      [params, state, x.right] as const,
      (p, s, xs) => {
        const P = p as Named<Tensor>, S = s as Named<Tensor>
        const res = q.apply(P, S, xs as Tensor, { training: run.mode === 'train' })
        return {
          quantized: res.quantized,
          indices: res.indices,
          aux_loss: res.loss,
          per_sample_entropy: res.losses['per_sample_entropy']!,
          batch_entropy: res.losses['batch_entropy']!,
          commitment: res.losses['commitment']!,
          indices_to_codes: q.indicesToCodes(P, res.indices, S),
          codes_before_project_out: res.extra!['codes']!,
        }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    runs.push({ outputs: r.right })
  }
  return E.right({ runs, derived: { codebook: derived['codebook']!, mask: derived['mask']! } })
}
