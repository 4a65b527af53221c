import * as t from 'io-ts'
import type { Aval, Tensor } from '@tessera/core'
import { TesseraError, prefixed, scoped } from '@tessera/core'
import type { Named } from '../quantizer.js'
import type { Stage } from '../sequential/sequential.js'
import { fnStage } from '../sequential/sequential.js'

/**
 * The reference's `vq_bridge` (FVQ): a module applied to the codebook (C, K, d) before distances are
 * taken, inside the codebook's forward. In Tessera it is a traceable function of one tensor, or a
 * `Stage` whose parameters live under `_codebook.vq_bridge.` (the reference's state-dict names), so
 * the outer optimizer, and the in-place codebook optimizer, learn them as the reference's do. A
 * function over tensors cannot be JSON, so it is a config value checked by this codec, as SimVQ's
 * `codebook_transform` is.
 */
export type VQBridge = Stage | ((codebook: Tensor) => Tensor)

export const BRIDGE_PREFIX = '_codebook.vq_bridge.'

const isStage = (u: unknown): u is Stage =>
  typeof u === 'object' && u !== null && typeof (u as Stage).apply === 'function' && typeof (u as Stage).init === 'function' &&
  typeof (u as Stage).paramSpecs === 'object' && (u as Stage).paramSpecs !== null

export const VQBridgeCodec = new t.Type<VQBridge, VQBridge, unknown>(
  'VQBridge (a function Tensor -> Tensor or a Stage)',
  (u): u is VQBridge => typeof u === 'function' || isStage(u),
  (u, c) => (typeof u === 'function' || isStage(u) ? t.success(u as VQBridge) : t.failure(u, c)),
  (a) => a,
)

/** The bridge as a stage (a plain function has no parameters), or null without one. */
export const bridgeStage = (b: VQBridge | null): Stage | null => (b === null ? null : typeof b === 'function' ? fnStage('vq_bridge', b) : b)

/** The bridge's parameter avals, under their state-dict names. */
export const bridgeSpecs = (s: Stage | null): Record<string, Aval> => (s ? prefixed(s.paramSpecs, BRIDGE_PREFIX) : {})

/** The bridge applied to the codebook, its output checked to keep the codebook's shape (the codes are still looked up by index). */
export function applyBridge(s: Stage, params: Named<Tensor>, embed: Tensor, where: string): Tensor {
  const out = s.apply(scoped(params, BRIDGE_PREFIX), embed)
  if (!out || out.dtype !== 'float32' || out.shape.length !== embed.rank || out.shape.some((d, i) => d !== embed.shape[i]))
    throw new TesseraError('shape', `${where}.vq_bridge`, `must map the codebook float32[${embed.shape.join(',')}] to the same shape, got ${out ? `${out.dtype}[${out.shape.join(',')}]` : String(out)}`)
  return out
}
