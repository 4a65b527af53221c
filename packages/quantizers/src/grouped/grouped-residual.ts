import * as E from 'fp-ts/lib/Either.js'
import type { Tensor, TesseraError } from '@tessera/core'
import type { LFQApplyOptions } from '../lfq/mask.js'
import type { ApplyOptions, Named, QuantizeResult } from '../quantizer.js'
import { check } from '../config/codec.js'
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

/** The reference's grouped forward takes `return_all_codes` (every group's, stacked in `extra.all_codes`) but no dropout seed. */
export interface GroupedResidualCallOptions {
  readonly returnAllCodes?: boolean
}

export interface GroupedResidualFSQ extends Grouped<GroupedConfig<ResidualFSQConfig>> {
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions & GroupedResidualCallOptions): QuantizeResult
}
/** Its groups are ResidualLFQs, which take LFQ's per-call options (`mask`): the combinator passes them to every group. */
export interface GroupedResidualLFQ extends Grouped<GroupedConfig<ResidualLFQConfig>> {
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: LFQApplyOptions & GroupedResidualCallOptions): QuantizeResult
}

// accept_image_fmap only picks the split axis (axis 1); the groups must then read channel-first input too
export const decodeGroupedResidualFSQ = (input: unknown, where = 'GroupedResidualFSQ') =>
  E.chain((c: GroupedConfig<ResidualFSQConfig>) =>
    E.map(() => c)(
      check(
        c.accept_image_fmap === c.inner.is_channel_first,
        where,
        'accept_image_fmap',
        'must equal is_channel_first: groups split the channel axis exactly when they read channel-first input',
      ),
    ),
  )(decodeGrouped(input, where, decodeResidualFSQ))
export const decodeGroupedResidualLFQ = (input: unknown, where = 'GroupedResidualLFQ') =>
  E.chain((c: GroupedConfig<ResidualLFQConfig>) =>
    E.map(() => c)(check(!c.accept_image_fmap, where, 'accept_image_fmap', 'ResidualLFQ groups take (b, n, d) input only')),
  )(decodeGrouped(input, where, decodeResidualLFQ))

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
