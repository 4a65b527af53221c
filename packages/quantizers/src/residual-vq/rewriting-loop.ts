import type { Tensor } from '@tessera/core'
import { prefixed, scoped, stack, where } from '@tessera/core'
import type { Named } from '../quantizer.js'
import { layerKey, layerPrefix } from '../residual/residual.js'
import type { VQApplyOptions, VectorQuantize } from '../vq/vector-quantize.js'

/** The greedy loop's outputs over the projected sequence (b, n, codebook_dim). */
export interface RewritingLoopResult {
  readonly quantized: Tensor
  readonly indices: Tensor
  readonly allLosses: Tensor
  readonly losses: Record<string, Tensor>
  readonly state: Record<string, Tensor>
  /** Each layer's rewritten parameters under `layers.{i}.` (see VectorQuantize's `updatedParams`). */
  readonly updatedParams: Record<string, Tensor>
}

/**
 * ResidualVQ's greedy loop for layers whose forward rewrites their codebook parameters (an in-place
 * codebook optimizer) or whose parameters are not all their own (a vq_bridge tied across layers):
 * the residual combinator's loop, which keeps only the layers' state and scopes each layer's
 * parameters itself, plus each layer's `updatedParams` under its own names, as every reference
 * layer steps its own optimizer in its forward. `layerParams(i)` is layer i's view of the
 * parameters. A layer after the quantize-dropout cut (`cut`, traced) did not run, so its state and
 * parameters stay as given.
 */
export function rewritingLoop(
  layers: readonly VectorQuantize[],
  params: Named<Tensor>,
  layerParams: (i: number) => Named<Tensor>,
  state: Named<Tensor>,
  z: Tensor,
  opts: VQApplyOptions & { readonly mask?: Tensor },
  cut: Tensor | undefined,
): RewritingLoopResult {
  const { key, ...callOpts } = opts
  let res = z
  let out: Tensor | undefined
  const indices: Tensor[] = [], layerLosses: Tensor[] = []
  const losses: Record<string, Tensor> = {}
  const next: Record<string, Tensor> = { ...state }
  const updatedParams: Record<string, Tensor> = {}
  layers.forEach((layer, i) => {
    const p = layerPrefix(i)
    const r = layer.apply(layerParams(i), scoped(state, p), res, { ...callOpts, ...(key ? { key: layerKey(key, i) } : {}) })
    const active = cut ? cut.ge(z.builder.scalar(i, 'int32')) : undefined
    const keep = (v: Tensor, old: Tensor) => (active && v !== old ? where(active.broadcastTo(v.shape), v, old) : v)
    const q = active ? where(active, r.quantized, 0) : r.quantized
    indices.push(active ? where(active, r.indices, -1) : r.indices)
    layerLosses.push(active ? where(active, r.loss, 0) : r.loss)
    for (const [k, v] of Object.entries(r.losses)) losses[`${p}${k}`] = active ? where(active, v, 0) : v
    for (const [k, v] of Object.entries(r.state)) next[`${p}${k}`] = keep(v, state[`${p}${k}`]!)
    for (const [k, v] of Object.entries(prefixed(r.updatedParams ?? {}, p))) updatedParams[k] = keep(v, params[k]!)
    res = res.sub(q.stopGradient())
    out = out ? out.add(q) : q
  })
  return { quantized: out!, indices: stack(indices, -1), allLosses: stack(layerLosses, 0), losses, state: next, updatedParams }
}
