import type { AnyTypedArray, DType, Shape } from '../dtype.js'
import { allocate, sizeOf, stridesOf } from '../dtype.js'

/**
 * Copy a strided view of `src` into a fresh row-major array of `outShape`:
 * out[i0..ik] = src[offset + Σ i_j * strides[j]]. Broadcast (stride 0), transpose (permuted
 * strides) and slice (offset, scaled strides) are all this one remap.
 */
export function viewCopy(src: AnyTypedArray, dtype: DType, outShape: Shape, strides: readonly number[], offset: number): AnyTypedArray {
  const n = sizeOf(outShape)
  const out = allocate(dtype, n)
  const r = outShape.length
  if (n === 0) return out
  if (r === 0) {
    out[0] = src[offset]!
    return out
  }
  const idx = new Array<number>(r).fill(0)
  const last = r - 1
  const lastDim = outShape[last]!
  const lastStride = strides[last]!
  let base = offset
  let o = 0
  for (;;) {
    let p = base
    for (let j = 0; j < lastDim; j++, p += lastStride) out[o++] = src[p]!
    // advance the multi-index over all but the last axis
    let ax = last - 1
    while (ax >= 0) {
      idx[ax]!++
      base += strides[ax]!
      if (idx[ax]! < outShape[ax]!) break
      base -= strides[ax]! * outShape[ax]!
      idx[ax] = 0
      ax--
    }
    if (ax < 0) return out
  }
}

export function transposeStrides(shape: Shape, perm: readonly number[]): number[] {
  const st = stridesOf(shape)
  return perm.map((p) => st[p]!)
}

export function broadcastStrides(inShape: Shape, outShape: Shape): number[] {
  const st = stridesOf(inShape)
  const off = outShape.length - inShape.length
  return outShape.map((_, i) => (i < off || inShape[i - off] === 1 ? 0 : st[i - off]!))
}
