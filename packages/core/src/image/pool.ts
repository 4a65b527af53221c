import type { Tensor } from '../builder.js'
import { where } from '../builder.js'
import { spatialSizes } from './checks.js'

/** torch's adaptive pooling windows on one axis: output i covers [floor(i·in/out), ceil((i+1)·in/out)). */
export function adaptiveWindows(inSize: number, outSize: number): { readonly start: number[]; readonly end: number[] } {
  const start: number[] = [], end: number[] = []
  for (let i = 0; i < outSize; i++) {
    start.push(Math.floor((i * inSize) / outSize))
    end.push(Math.ceil(((i + 1) * inSize) / outSize))
  }
  return { start, end }
}

/** Sum each window of one axis: a reshape when the windows tile it, else a gather of the widest window, masked. */
function windowSums(x: Tensor, axis: number, outSize: number): Tensor {
  const n = x.shape[axis]!
  if (n === outSize) return x
  if (n % outSize === 0) {
    const k = n / outSize
    return x.reshape([...x.shape.slice(0, axis), outSize, k, ...x.shape.slice(axis + 1)]).sum(axis + 1)
  }
  const { start, end } = adaptiveWindows(n, outSize)
  const widest = Math.max(...end.map((e, i) => e - start[i]!))
  const idx: number[] = [], inside: number[] = []
  for (let i = 0; i < outSize; i++)
    for (let k = 0; k < widest; k++) {
      // past a window's end, read its last element again (always in range) and mask it out
      idx.push(Math.min(start[i]! + k, end[i]! - 1))
      inside.push(start[i]! + k < end[i]! ? 1 : 0)
    }
  const bl = x.builder
  // gathered along a leading axis, so the gather's VJP is one one-hot matrix (see resize.ts)
  const lead = x.moveAxis(axis, 0)
  const g = lead.gather(bl.constant(idx, [outSize, widest], 'int32'), 0)
  const mask = bl.constant(inside, [outSize, widest], 'bool').reshape([outSize, widest, ...lead.shape.slice(1).map(() => 1)])
  return where(mask, g, 0).sum(1).moveAxis(0, axis)
}

/**
 * torch.nn.functional.adaptive_avg_pool2d(x, (oh, ow)) on NCHW float32 input: the mean of each
 * window (windows as `adaptiveWindows`), the window sum divided by its height, then its width, as
 * torch does. Composed from reshapes, gathers and sums (docs/ARCHITECTURE.md, "Composite operations").
 */
export function adaptiveAvgPool2d(x: Tensor, size: readonly [number, number]): Tensor {
  const OP = 'adaptiveAvgPool2d'
  const [h, w] = spatialSizes(OP, x, size)
  const [oh, ow] = size
  if (oh === h && ow === w) return x
  const sums = windowSums(windowSums(x, 2, oh), 3, ow)
  const bl = x.builder
  const counts = (n: number, o: number) => {
    const { start, end } = adaptiveWindows(n, o)
    return end.map((e, i) => e - start[i]!)
  }
  return sums.div(bl.constant(counts(h, oh), [oh, 1])).div(bl.constant(counts(w, ow), [1, ow]))
}
