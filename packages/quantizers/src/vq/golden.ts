import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import type { CaseRunner, RunProduct } from '../golden/runner.js'
import { loadCaseState, runInput } from '../golden/runner.js'
import type { Named } from '../quantizer.js'
import { runOnHost } from '../run.js'
import { decodeVQ } from './config.js'
import { makeVectorQuantize } from './vector-quantize.js'

/**
 * VectorQuantize cases: runs execute in order on one module, so the state a training run leaves
 * feeds the next run. Forward keyword arguments that are also constructor options
 * (`freeze_codebook`, `sample_codebook_temp`) go into that run's config.
 */
export const runVectorQuantizeCase: CaseRunner = async (c, ctx) => {
  const base = decodeVQ(c.kwargs)
  if (E.isLeft(base)) return base
  const loaded = loadCaseState(makeVectorQuantize(base.right), c.state)
  if (E.isLeft(loaded)) return loaded
  const params = loaded.right.params
  let state: Named<HostTensor> = loaded.right.state
  const runs: RunProduct[] = []
  for (const run of c.runs) {
    const cfg = decodeVQ({ ...c.kwargs, ...run.callKwargs })
    if (E.isLeft(cfg)) return cfg
    const q = makeVectorQuantize(cfg.right)
    const x = runInput(run)
    if (E.isLeft(x)) return x
    const r = await runOnHost(
      ctx.backend,
      [params, state, x.right] as const,
      (p, s, xs) => {
        const P = p as Named<Tensor>, S = s as Named<Tensor>
        const res = q.apply(P, S, xs as Tensor, { training: run.mode === 'train' })
        return {
          outputs: {
            quantized: res.quantized,
            indices: res.indices,
            loss: res.loss,
            commitment: res.losses['commitment']!,
            codebook_dist: res.extra!['codebook_dist']!,
            codebook_input: res.extra!['codebook_input']!,
            // the reference calls get_output_from_indices after the forward, on the updated module
            get_output_from_indices: q.indicesToCodes(P, res.indices, res.state),
          },
          state: { ...res.state },
        }
      },
      ctx.cache,
    )
    if (E.isLeft(r)) return r
    state = r.right.state as Named<HostTensor>
    runs.push({ outputs: r.right.outputs as Named<HostTensor>, stateAfter: state })
  }
  return E.right({ runs })
}
