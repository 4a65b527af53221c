import type { Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'

/**
 * The reference accepts (b, n, d) sequences and channel-first images/videos (b, d, ...spatial).
 * Quantizers work on (b, n, d); this packs the input into that layout and gives the inverse for
 * every output that keeps the token axis.
 */
export interface PackedLayout {
  /** (b, n, d) */
  readonly x: Tensor
  /** (b, n, ...rest) -> the input's layout: (b, ...rest... ) for (b,n,d); channel-first moves the last axis back to 1. */
  unpack(t: Tensor): Tensor
  /** (b, n, ...rest) -> (b, ...spatial, ...rest) for indices and other per-token outputs. */
  unpackTokens(t: Tensor): Tensor
}

export function packLayout(x: Tensor, channelFirst: boolean, expectedDim: number, where: string): PackedLayout {
  if (channelFirst) {
    if (x.rank < 3) throw new TesseraError('shape', where, `channel-first input needs rank >= 3 (b, d, ...), got [${x.shape.join(',')}]`)
    const b = x.shape[0]!, d = x.shape[1]!
    const spatial = x.shape.slice(2)
    if (d !== expectedDim) throw new TesseraError('shape', where, `input has ${d} channels on axis 1; expected dim ${expectedDim}`)
    const n = spatial.reduce((a, c) => a * c, 1)
    const packed = x.reshape([b, d, n]).mT
    return {
      x: packed,
      unpack: (t) => t.moveAxis(2, 1).reshape([b, t.shape[2]!, ...spatial, ...t.shape.slice(3)]),
      unpackTokens: (t) => t.reshape([b, ...spatial, ...t.shape.slice(2)]),
    }
  }
  if (x.rank !== 3) throw new TesseraError('shape', where, `input must be (b, n, d), got [${x.shape.join(',')}]`)
  if (x.shape[2] !== expectedDim)
    throw new TesseraError('shape', where, `input has last dimension ${x.shape[2]}; expected dim ${expectedDim}`)
  return { x, unpack: (t) => t, unpackTokens: (t) => t }
}
