import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import type { GroupedConfig } from '../grouped/grouped-residual.js'
import type { Grouped } from '../grouped/grouped.js'
import { decodeGrouped, grouped } from '../grouped/grouped.js'
import type { Named, QuantizeResult } from '../quantizer.js'
import type { RVQConfig } from './config.js'
import { decodeRVQ } from './config.js'
import type { GroupedRVQApplyOptions } from './call-options.js'
import { checkGroupedRVQOptions } from './call-options.js'
import type { ResidualVQ } from './residual-vq.js'
import { makeResidualVQ } from './residual-vq.js'
import { groupedTargetApply } from './grouped-targets.js'

/**
 * GroupedResidualVQ: the grouped combinator over ResidualVQs of dim / groups each (state under
 * `rvqs.{g}.`). Every group gets the call's options. With `returnAllCodes`, `extra.all_codes` is
 * the groups' codes stacked in group order, (groups, q, b, n, codebook_dim) ((groups, q, b, h, w,
 * codebook_dim) for images): the reference returns them as a tuple of per-group (q, b, n,
 * codebook_dim) tensors, and `all_codes[g]` is its element g.
 */
export interface GroupedResidualVQ extends Grouped<GroupedConfig<RVQConfig>> {
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: GroupedRVQApplyOptions): QuantizeResult
}

export function decodeGroupedResidualVQ(input: unknown, where = 'GroupedResidualVQ'): E.Either<TesseraError, GroupedConfig<RVQConfig>> {
  // the reference hands accept_image_fmap to every group's ResidualVQ as well
  const fmap = typeof input === 'object' && input !== null && (input as Record<string, unknown>)['accept_image_fmap'] === true
  const r = decodeGrouped(input, where, (rest, w) => decodeRVQ(fmap ? { ...rest, accept_image_fmap: true } : rest, w))
  // the grouped combinator keeps the groups' state only, so the layers' rewritten parameters would be lost
  if (E.isRight(r) && (r.right.inner.layers[0]?.in_place_codebook_optimizer ?? null) !== null)
    return E.left(new TesseraError('config', `${where}.in_place_codebook_optimizer`, "is not supported by GroupedResidualVQ yet: the groups' in-place steps rewrite their codebook parameters (updatedParams), which the grouped combinator does not hand back; use ResidualVQ"))
  if (E.isRight(r) && (r.right.inner.layers[0]?.vq_bridge ?? null) !== null)
    return E.left(new TesseraError('config', `${where}.vq_bridge`, 'is not supported by GroupedResidualVQ yet: the reference hands one bridge module to every group and layer (parameters tied across groups), which the grouped combinator does not model; use ResidualVQ'))
  return r
}

export function makeGroupedResidualVQ(cfg: GroupedConfig<RVQConfig>): GroupedResidualVQ {
  const base = grouped(cfg, {
    kind: 'GroupedResidualVQ',
    dim: cfg.dim,
    groups: Array.from({ length: cfg.groups }, () => makeResidualVQ(cfg.inner)),
    splitAxis1: cfg.accept_image_fmap,
  })
  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: GroupedRVQApplyOptions): QuantizeResult => {
    checkGroupedRVQOptions(opts, 'GroupedResidualVQ')
    if (opts.indices !== undefined) return groupedTargetApply(base.spec.groups as readonly ResidualVQ[], params, state, x, opts, 'GroupedResidualVQ')
    // (the grouped combinator stacks the groups' all_codes)
    return base.apply(params, state, x, opts)
  }
  return { ...base, apply }
}

export const groupedResidualVQ = (options: unknown): E.Either<TesseraError, GroupedResidualVQ> =>
  E.map(makeGroupedResidualVQ)(decodeGroupedResidualVQ(options))
