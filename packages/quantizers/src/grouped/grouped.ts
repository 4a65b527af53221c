import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, concat, prefixed, random, scoped, stack } from '@tessera/core'
import { PositiveInt, check, decode } from '../config/codec.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'

/**
 * Grouped quantization as a combinator: split the feature axis into equal groups, quantize each
 * group with its own quantizer, concatenate the outputs and stack the indices (g, ...).
 */
export interface GroupedSpec {
  readonly kind: string
  readonly dim: number
  readonly groups: readonly Quantizer[]
  /** Split axis 1 (channel-first feature maps) instead of the last axis. */
  readonly splitAxis1: boolean
}

export interface Grouped<C = unknown> extends Quantizer<C> {
  readonly spec: GroupedSpec
  /** Per-group codes stacked (g, ...) where every group offers `codesFromIndices` (residual groups: (g, q, b, n, d)). */
  codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
}

interface WithCodes {
  codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
}
const hasCodes = (q: Quantizer): q is Quantizer & WithCodes => typeof (q as Partial<WithCodes>).codesFromIndices === 'function'

export const groupPrefix = (g: number) => `rvqs.${g}.`

export function grouped<C>(config: C, spec: GroupedSpec): Grouped<C> {
  const ng = spec.groups.length
  if (ng < 1 || spec.dim % ng !== 0) throw new TesseraError('config', `${spec.kind}.groups`, `dim ${spec.dim} does not split into ${ng} groups`)
  const paramSpecs: Record<string, Aval> = {}
  const stateSpecs: Record<string, Aval> = {}
  spec.groups.forEach((q, g) => {
    Object.assign(paramSpecs, prefixed(q.paramSpecs, groupPrefix(g)))
    Object.assign(stateSpecs, prefixed(q.stateSpecs, groupPrefix(g)))
  })
  const axisOf = (x: Tensor) => (spec.splitAxis1 ? 1 : x.rank - 1)

  const init = (key: random.Key): Init => {
    const keys = random.splitKey(key, ng)
    const params: Record<string, HostTensor> = {}
    const state: Record<string, HostTensor> = {}
    spec.groups.forEach((q, g) => {
      const i = q.init(keys[g]!)
      Object.assign(params, prefixed(i.params, groupPrefix(g)))
      Object.assign(state, prefixed(i.state, groupPrefix(g)))
    })
    return { params, state }
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    const axis = axisOf(x)
    if (x.rank < 2 || x.shape[axis] !== spec.dim)
      throw new TesseraError('shape', spec.kind, `input needs ${spec.dim} features on axis ${axis}, got [${x.shape.join(',')}]`)
    if ((opts as { randQuantizeDropoutFixedSeed?: unknown }).randQuantizeDropoutFixedSeed !== undefined)
      throw new TesseraError('input', `${spec.kind}.randQuantizeDropoutFixedSeed`, 'not an argument of the reference\'s grouped forward, which draws one seed for every group (the key\'s draw cuts every group at the same depth)')
    const chunks = x.split(axis, ng)
    // one key for every group, so quantize dropout cuts all groups at the same depth (as the reference's shared seed)
    const outs = spec.groups.map((q, g) => q.apply(scoped(params, groupPrefix(g)), scoped(state, groupPrefix(g)), chunks[g]!, opts))
    const newState: Record<string, Tensor> = {}
    const losses: Record<string, Tensor> = {}
    outs.forEach((o, g) => {
      Object.assign(newState, prefixed(o.state, groupPrefix(g)))
      Object.assign(losses, prefixed(o.losses, groupPrefix(g)))
    })
    const perGroupLosses = outs.map((o) => o.extra?.['all_losses'] ?? o.loss)
    const allLosses = stack(perGroupLosses, 0)
    const extra: Record<string, Tensor> = { all_losses: allLosses }
    // returnAllCodes: every group quantizes the same tokens with the same number of layers (dropped
    // ones are 0), so their per-layer codes stack (groups, q, b, ..., d) in place of the groups' own
    const allCodes = outs.every((o) => o.extra?.['all_codes'])
    outs.forEach((o, g) => {
      const { all_codes: _codes, ...rest } = o.extra ?? {}
      Object.assign(extra, prefixed(allCodes ? rest : (o.extra ?? {}), groupPrefix(g)))
    })
    if (allCodes) extra['all_codes'] = stack(outs.map((o) => o.extra!['all_codes']!), 0)
    return {
      quantized: concat(outs.map((o) => o.quantized), axis),
      indices: stack(outs.map((o) => o.indices), 0),
      loss: allLosses.sum(),
      losses,
      state: newState,
      extra,
    }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (indices.rank < 1 || indices.shape[0] !== ng)
      throw new TesseraError('shape', `${spec.kind}.indicesToCodes`, `indices need the group axis first (${ng}), got [${indices.shape.join(',')}]`)
    const parts = spec.groups.map((q, g) =>
      q.indicesToCodes(scoped(params, groupPrefix(g)), indices.index(0, g), state ? scoped(state, groupPrefix(g)) : undefined),
    )
    return concat(parts, spec.splitAxis1 ? 1 : parts[0]!.rank - 1)
  }

  const codesFromIndices = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (indices.rank < 1 || indices.shape[0] !== ng)
      throw new TesseraError('shape', `${spec.kind}.codesFromIndices`, `indices need the group axis first (${ng}), got [${indices.shape.join(',')}]`)
    return stack(
      spec.groups.map((q, g) => {
        if (!hasCodes(q)) throw new TesseraError('input', `${spec.kind}.codesFromIndices`, `group quantizer ${q.kind} has no codesFromIndices`)
        return q.codesFromIndices(scoped(params, groupPrefix(g)), indices.index(0, g), state ? scoped(state, groupPrefix(g)) : undefined)
      }),
      0,
    )
  }

  return { kind: spec.kind, config, spec, paramSpecs, stateSpecs, init, apply, indicesToCodes, codesFromIndices }
}

/** Decode the grouped wrapper's own keys; everything else goes to the inner quantizer's decoder. */
export function decodeGrouped<C>(
  input: unknown,
  where: string,
  inner: (rest: Record<string, unknown>, where: string) => E.Either<TesseraError, C>,
): E.Either<TesseraError, { dim: number; groups: number; accept_image_fmap: boolean; inner: C }> {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    return E.left(new TesseraError('config', where, `expected an object of options, got ${JSON.stringify(input)}`))
  const { dim, groups, accept_image_fmap, ...rest } = input as Record<string, unknown>
  const head = decode(
    t.intersection([t.type({ dim: PositiveInt }), t.partial({ groups: PositiveInt, accept_image_fmap: t.boolean })]),
    { dim, ...(groups !== undefined ? { groups } : {}), ...(accept_image_fmap !== undefined ? { accept_image_fmap } : {}) },
    where,
  )
  if (E.isLeft(head)) return head
  const g = head.right.groups ?? 1
  const ok = check(head.right.dim % g === 0, where, 'groups', `dim ${head.right.dim} is not divisible by groups ${g}`)
  if (E.isLeft(ok)) return ok
  const innerCfg = inner({ ...rest, dim: head.right.dim / g }, where)
  if (E.isLeft(innerCfg)) return innerCfg
  return E.right({ dim: head.right.dim, groups: g, accept_image_fmap: head.right.accept_image_fmap ?? false, inner: innerCfg.right })
}

