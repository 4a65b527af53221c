import * as E from 'fp-ts/lib/Either.js'
import type { TesseraError } from '@tessera/core'
import type { GroupedConfig } from '../grouped/grouped-residual.js'
import type { Grouped } from '../grouped/grouped.js'
import { decodeGrouped, grouped } from '../grouped/grouped.js'
import type { RVQConfig } from './config.js'
import { decodeRVQ } from './config.js'
import { makeResidualVQ } from './residual-vq.js'

/** GroupedResidualVQ: the grouped combinator over ResidualVQs of dim / groups each (state under `rvqs.{g}.`). */
export type GroupedResidualVQ = Grouped<GroupedConfig<RVQConfig>>

export function decodeGroupedResidualVQ(input: unknown, where = 'GroupedResidualVQ'): E.Either<TesseraError, GroupedConfig<RVQConfig>> {
  // the reference hands accept_image_fmap to every group's ResidualVQ as well
  const fmap = typeof input === 'object' && input !== null && (input as Record<string, unknown>)['accept_image_fmap'] === true
  return decodeGrouped(input, where, (rest, w) => decodeRVQ(fmap ? { ...rest, accept_image_fmap: true } : rest, w))
}

export function makeGroupedResidualVQ(cfg: GroupedConfig<RVQConfig>): GroupedResidualVQ {
  return grouped(cfg, {
    kind: 'GroupedResidualVQ',
    dim: cfg.dim,
    groups: Array.from({ length: cfg.groups }, () => makeResidualVQ(cfg.inner)),
    splitAxis1: cfg.accept_image_fmap,
  })
}

export const groupedResidualVQ = (options: unknown): E.Either<TesseraError, GroupedResidualVQ> =>
  E.map(makeGroupedResidualVQ)(decodeGroupedResidualVQ(options))
