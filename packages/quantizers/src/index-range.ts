import type { HostTensor } from '@tessera/core'
import type { Quantizer } from './quantizer.js'

/**
 * The indices a quantizer decodes: each position's valid range, read from the quantizer's
 * structure (a residual quantizer's layer axis, a grouped one's group axis, per-layer codebook
 * sizes). Decoding computes codes arithmetically (FSQ, LFQ) or gathers rows, so an index out of
 * range would wrap or clamp differently on each backend: it is refused before anything runs.
 */
export interface IndexRange {
  /** Codebook size at a position, given its multi-index (undefined where the indices' shape is not the quantizer's: its own shape check answers). */
  size(at: readonly number[]): number | undefined
  /** -1 marks a layer skipped by quantize dropout, decoded as zeros (the reference's convention). */
  readonly dropped: boolean
}

interface Config {
  readonly codebook_size?: unknown
  readonly codebook_sizes?: unknown
  readonly channel_first?: unknown
  readonly layer?: { readonly codebook_size?: unknown }
  readonly vq?: { readonly codebook_size?: unknown }
}

const isSize = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0

/** The index range of `q` for indices of `rank` axes, or undefined where the structure is not known. */
export function indexRangeOf(q: Quantizer, rank: number): IndexRange | undefined {
  const spec = (q as { spec?: { layers?: readonly Quantizer[]; groups?: readonly Quantizer[]; channelFirst?: boolean } }).spec
  const cfg = (q.config ?? {}) as Config
  // Sequential: the indices are its one quantizer's, unchanged
  const inner = (q as { inner?: Quantizer }).inner
  if (inner) return indexRangeOf(inner, rank)
  if (spec?.groups) {
    // grouped: indices stacked (g, ...), each group decoded by its own quantizer
    const inner = spec.groups.map((g) => indexRangeOf(g, rank - 1))
    if (inner.some((r) => r === undefined)) return undefined
    return { size: (at) => inner[at[0]!]?.size(at.slice(1)), dropped: inner.some((r) => r!.dropped) }
  }
  if (spec?.layers) {
    // residual: the layer axis is the last one, or axis 1 for channel-first inputs
    const sizes = spec.layers.map((l) => indexRangeOf(l, rank))
    if (sizes.some((r) => r === undefined)) return undefined
    const axis = spec.channelFirst ? 1 : rank - 1
    return { size: (at) => sizes[at[axis]!]?.size([]), dropped: true }
  }
  if (Array.isArray(cfg.codebook_sizes) && cfg.codebook_sizes.every(isSize)) {
    // ResidualVQ: per-layer sizes along the last axis
    const sizes = cfg.codebook_sizes as readonly number[]
    return { size: (at) => sizes[at[rank - 1]!], dropped: true }
  }
  if (isSize(cfg.layer?.codebook_size)) {
    // ResidualSimVQ: one layer config repeated
    const size = cfg.layer!.codebook_size as number
    return { size: () => size, dropped: true }
  }
  // RandomProjectionQuantizer: its inner VectorQuantize decodes
  const own = isSize(cfg.codebook_size) ? cfg.codebook_size : cfg.vq?.codebook_size
  if (isSize(own)) {
    const size = own
    return { size: () => size, dropped: false }
  }
  return undefined
}

/** The first index of `indices` outside its range, described, or undefined when all are valid. */
export function outOfRange(q: Quantizer, indices: HostTensor): string | undefined {
  const range = indexRangeOf(q, indices.shape.length)
  if (!range) return undefined
  const shape = indices.shape
  const at = new Array<number>(shape.length).fill(0)
  for (let j = 0; j < indices.data.length; j++) {
    const v = indices.data[j]!
    const size = range.size(at)
    if (size !== undefined && !(v >= 0 && v < size) && !(range.dropped && v === -1))
      return `index ${v} at position [${at.join(',')}] (flat ${j}) is outside [0, ${size})${range.dropped ? ' (or -1 for a dropped layer)' : ''}`
    for (let a = shape.length - 1; a >= 0; a--) {
      if (++at[a]! < shape[a]!) break
      at[a] = 0
    }
  }
  return undefined
}
