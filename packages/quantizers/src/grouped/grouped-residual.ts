import * as E from 'fp-ts/lib/Either.js'
import type { TesseraError } from '@tessera/core'
import type { ResidualFSQConfig } from '../residual/residual-fsq.js'
import { decodeResidualFSQ, makeResidualFSQ } from '../residual/residual-fsq.js'
import type { ResidualLFQConfig } from '../residual/residual-lfq.js'
import { decodeResidualLFQ, makeResidualLFQ } from '../residual/residual-lfq.js'
import type { Grouped } from './grouped.js'
import { decodeGrouped, grouped } from './grouped.js'

export interface GroupedConfig<C> {
  readonly dim: number
  readonly groups: number
  readonly accept_image_fmap: boolean
  /** the config of each group's residual quantizer (dim = dim / groups) */
  readonly inner: C
}

export type GroupedResidualFSQ = Grouped<GroupedConfig<ResidualFSQConfig>>
export type GroupedResidualLFQ = Grouped<GroupedConfig<ResidualLFQConfig>>

export const decodeGroupedResidualFSQ = (input: unknown, where = 'GroupedResidualFSQ') => decodeGrouped(input, where, decodeResidualFSQ)
export const decodeGroupedResidualLFQ = (input: unknown, where = 'GroupedResidualLFQ') => decodeGrouped(input, where, decodeResidualLFQ)

export function makeGroupedResidualFSQ(cfg: GroupedConfig<ResidualFSQConfig>): GroupedResidualFSQ {
  return grouped(cfg, {
    kind: 'GroupedResidualFSQ',
    dim: cfg.dim,
    groups: Array.from({ length: cfg.groups }, () => makeResidualFSQ(cfg.inner)),
    splitAxis1: cfg.accept_image_fmap,
  })
}

export function makeGroupedResidualLFQ(cfg: GroupedConfig<ResidualLFQConfig>): GroupedResidualLFQ {
  return grouped(cfg, {
    kind: 'GroupedResidualLFQ',
    dim: cfg.dim,
    groups: Array.from({ length: cfg.groups }, () => makeResidualLFQ(cfg.inner)),
    splitAxis1: cfg.accept_image_fmap,
  })
}

export const groupedResidualFSQ = (options: unknown): E.Either<TesseraError, GroupedResidualFSQ> =>
  E.map(makeGroupedResidualFSQ)(decodeGroupedResidualFSQ(options))
export const groupedResidualLFQ = (options: unknown): E.Either<TesseraError, GroupedResidualLFQ> =>
  E.map(makeGroupedResidualLFQ)(decodeGroupedResidualLFQ(options))
