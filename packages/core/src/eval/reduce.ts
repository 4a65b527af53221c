import type { AnyTypedArray } from '../dtype.js'
import { allocate, sizeOf } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import { nanMax, nanMin } from '../scalar.js'
import type { Impl, ImplTable } from './impl.js'
import { transposeStrides, viewCopy } from './view.js'

/**
 * Reductions and matmul in the reference. Float sums and matmul accumulate in float64 and round
 * once at the end (int32 sums wrap); max/min propagate NaN; argmin/argmax return the first index
 * among ties, and a NaN wins (as in torch).
 */

/** Move `axes` to the end (keeping order) and return the contiguous data plus outer/inner sizes. */
function axesLast(t: HostTensor, axes: readonly number[]): { data: AnyTypedArray; outer: number; inner: number } {
  const r = t.shape.length
  const keep = [...Array(r).keys()].filter((i) => !axes.includes(i))
  const perm = [...keep, ...axes]
  const inner = axes.reduce((a, i) => a * t.shape[i]!, 1)
  const outer = keep.reduce((a, i) => a * t.shape[i]!, 1)
  const moved = perm.every((p, i) => p === i)
    ? t.data
    : viewCopy(t.data, t.dtype, perm.map((p) => t.shape[p]!), transposeStrides(t.shape, perm), 0)
  return { data: moved, outer, inner }
}

function reduceImpl<P extends 'reduce_sum' | 'reduce_max' | 'reduce_min'>(kind: 'sum' | 'max' | 'min'): Impl<P> {
  return (ins, p, out) => {
    const t = ins[0]!
    const { data, outer, inner } = axesLast(t, p.axes)
    const r = allocate(out.dtype, outer)
    const isInt = t.dtype === 'int32'
    for (let o = 0; o < outer; o++) {
      const base = o * inner
      if (kind === 'sum') {
        let s = 0
        if (isInt) for (let j = 0; j < inner; j++) s = (s + data[base + j]!) | 0
        else for (let j = 0; j < inner; j++) s += data[base + j]!
        r[o] = s
      } else {
        let m = data[base]!
        const f = kind === 'max' ? nanMax : nanMin
        for (let j = 1; j < inner; j++) m = f(m, data[base + j]!)
        r[o] = m
      }
    }
    return r
  }
}

function argImpl<P extends 'argmin' | 'argmax'>(kind: 'min' | 'max'): Impl<P> {
  return (ins, p, out) => {
    const t = ins[0]!
    const { data, outer, inner } = axesLast(t, [p.axis])
    const r = allocate(out.dtype, outer)
    for (let o = 0; o < outer; o++) {
      const base = o * inner
      let best = data[base]!
      let bi = 0
      if (best === best) {
        for (let j = 1; j < inner; j++) {
          const v = data[base + j]!
          if (v !== v) {
            bi = j
            break
          }
          if (kind === 'min' ? v < best : v > best) {
            best = v
            bi = j
          }
        }
      }
      r[o] = bi
    }
    return r
  }
}

export const reduceImpls: Pick<ImplTable, 'reduce_sum' | 'reduce_max' | 'reduce_min' | 'argmin' | 'argmax' | 'matmul'> = {
  reduce_sum: reduceImpl('sum'),
  reduce_max: reduceImpl('max'),
  reduce_min: reduceImpl('min'),
  argmin: argImpl('min'),
  argmax: argImpl('max'),
  matmul: (ins, _p, out) => {
    const a = ins[0]!, b = ins[1]!
    const r = a.shape.length
    const m = a.shape[r - 2]!, k = a.shape[r - 1]!, n = b.shape[r - 1]!
    const batch = sizeOf(a.shape.slice(0, -2))
    const res = new Float32Array(sizeOf(out.shape))
    const acc = new Float64Array(n)
    const ad = a.data, bd = b.data
    for (let bt = 0; bt < batch; bt++) {
      const aOff = bt * m * k, bOff = bt * k * n, oOff = bt * m * n
      for (let i = 0; i < m; i++) {
        acc.fill(0)
        for (let kk = 0; kk < k; kk++) {
          const av = ad[aOff + i * k + kk]!
          const bRow = bOff + kk * n
          for (let j = 0; j < n; j++) acc[j] += av * bd[bRow + j]!
        }
        for (let j = 0; j < n; j++) res[oOff + i * n + j] = acc[j]!
      }
    }
    return res
  },
}
