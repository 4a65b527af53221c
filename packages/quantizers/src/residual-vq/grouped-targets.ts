import type { Tensor } from '@tessera/core'
import { TesseraError, concat, fmtShape, prefixed, scoped, stack } from '@tessera/core'
import { groupPrefix } from '../grouped/grouped.js'
import type { Named, QuantizeResult } from '../quantizer.js'
import type { GroupedRVQApplyOptions } from './call-options.js'
import type { ResidualVQ } from './residual-vq.js'

/**
 * GroupedResidualVQ given target codes, int32 (groups, b, n, q): as the reference's forward reads,
 * group g's ResidualVQ quantizes its feature chunk with targets `indices[g]` (a ResidualVQ call with
 * targets, docs/QUANTIZERS.md difference 12), and the call returns the chunks' outputs concatenated
 * and the groups' cross entropies summed. `indices` come back as given.
 */
export function groupedTargetApply(
  groups: readonly ResidualVQ[],
  params: Named<Tensor>,
  state: Named<Tensor>,
  x: Tensor,
  opts: GroupedRVQApplyOptions,
  where: string,
): QuantizeResult {
  const t = opts.indices!
  const ng = groups.length
  const nq = groups[0]!.config.num_quantizers
  if (groups[0]!.config.accept_image_fmap) throw new TesseraError('input', `${where}.indices`, 'target codes are not taken with accept_image_fmap (the reference asserts)')
  const ok = typeof t === 'object' && t !== null && 'shape' in t && t.dtype === 'int32' && t.rank === 4 && x.rank === 3 && t.shape[0] === ng && t.shape[1] === x.shape[0] && t.shape[2] === x.shape[1] && t.shape[3] === nq
  if (!ok) throw new TesseraError('shape', `${where}.indices`, `target codes must be int32 (${ng}, ${x.shape[0]}, ${x.rank === 3 ? x.shape[1] : 'n'}, ${nq}) (groups first) for x ${fmtShape(x.shape)}, got ${typeof t === 'object' && t !== null && 'shape' in t ? `${t.dtype}${fmtShape(t.shape)}` : typeof t}`)
  const axis = x.rank - 1
  const chunks = x.split(axis, ng)
  const outs = groups.map((q, g) => q.apply(scoped(params, groupPrefix(g)), scoped(state, groupPrefix(g)), chunks[g]!, { ...opts, indices: t.index(0, g) }))
  const next: Record<string, Tensor> = {}
  const losses: Record<string, Tensor> = {}
  const extra: Record<string, Tensor> = {}
  outs.forEach((o, g) => {
    Object.assign(next, prefixed(o.state, groupPrefix(g)))
    Object.assign(losses, prefixed(o.losses, groupPrefix(g)))
    Object.assign(extra, prefixed(o.extra ?? {}, groupPrefix(g)))
  })
  const allLosses = stack(outs.map((o) => o.extra!['all_losses']!), 0)
  return {
    quantized: concat(outs.map((o) => o.quantized), axis),
    indices: t,
    loss: outs.map((o) => o.loss).reduce((a, l) => a.add(l)),
    losses,
    state: next,
    extra: { ...extra, all_losses: allLosses },
  }
}
