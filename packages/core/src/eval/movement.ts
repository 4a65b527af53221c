import { allocate, sizeOf, stridesOf } from '../dtype.js'
import { TesseraError } from '../error.js'
import { castTo } from '../scalar.js'
import type { ImplTable } from './impl.js'
import { broadcastStrides, transposeStrides, viewCopy } from './view.js'

/**
 * Movement primitives and gather in the reference: index remaps that copy values unchanged
 * (pad's fill is its value cast to the tensor's dtype). Gather with an index outside the axis
 * throws, naming the index and the axis.
 */
export const movementImpls: Pick<ImplTable, 'reshape' | 'broadcast' | 'transpose' | 'slice' | 'pad' | 'concat' | 'gather'> = {
  reshape: (ins) => ins[0]!.data.slice(),
  broadcast: (ins, p) => viewCopy(ins[0]!.data, ins[0]!.dtype, p.shape, broadcastStrides(ins[0]!.shape, p.shape), 0),
  transpose: (ins, p, out) => viewCopy(ins[0]!.data, ins[0]!.dtype, out.shape, transposeStrides(ins[0]!.shape, p.perm), 0),
  slice: (ins, p, out) => {
    const st = stridesOf(ins[0]!.shape)
    const offset = p.start.reduce((a, s, i) => a + s * st[i]!, 0)
    return viewCopy(ins[0]!.data, ins[0]!.dtype, out.shape, st.map((s, i) => s * p.step[i]!), offset)
  },
  pad: (ins, p, out) => {
    const t = ins[0]!
    const r = allocate(out.dtype, sizeOf(out.shape))
    r.fill(castTo(out.dtype, p.value))
    if (sizeOf(t.shape) === 0) return r
    // write the input block into the output through a strided view of the output
    const ost = stridesOf(out.shape)
    const offset = p.lo.reduce((a, l, i) => a + l * ost[i]!, 0)
    const ist = stridesOf(t.shape)
    for (let k = 0; k < t.data.length; k++) {
      let rem = k, o = offset
      for (let ax = 0; ax < t.shape.length; ax++) {
        const q = Math.floor(rem / ist[ax]!)
        rem -= q * ist[ax]!
        o += q * ost[ax]!
      }
      r[o] = t.data[k]!
    }
    return r
  },
  concat: (ins, p, out) => {
    const r = allocate(out.dtype, sizeOf(out.shape))
    const outer = out.shape.slice(0, p.axis).reduce((a, b) => a * b, 1)
    const rowOut = sizeOf(out.shape.slice(p.axis))
    let col = 0
    for (const t of ins) {
      const rowIn = sizeOf(t.shape.slice(p.axis))
      for (let o = 0; o < outer; o++) r.set(t.data.subarray(o * rowIn, (o + 1) * rowIn), o * rowOut + col)
      col += rowIn
    }
    return r
  },
  gather: (ins, p, out) => {
    const x = ins[0]!, idx = ins[1]!
    const d = x.shape[p.axis]!
    const outer = sizeOf(x.shape.slice(0, p.axis))
    const inner = sizeOf(x.shape.slice(p.axis + 1))
    const ni = idx.data.length
    const r = allocate(out.dtype, sizeOf(out.shape))
    for (let j = 0; j < ni; j++) {
      const v = idx.data[j]!
      if (v < 0 || v >= d)
        throw new TesseraError('runtime', 'gather', `index ${v} (at flat position ${j}) is out of range [0, ${d}) on axis ${p.axis}`)
    }
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < ni; j++) {
        const src = (o * d + idx.data[j]!) * inner
        r.set(x.data.subarray(src, src + inner), (o * ni + j) * inner)
      }
    return r
  },
}
