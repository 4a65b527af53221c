import type { Tensor } from '../builder.js'
import { paramError } from '../error.js'
import { spatialSizes } from './checks.js'

export type ResizeMode = 'bilinear' | 'nearest'

export interface ResizeOptions {
  /** default 'bilinear' */
  readonly mode?: ResizeMode
  /** bilinear only, as torch's `align_corners` (default false) */
  readonly alignCorners?: boolean
}

/** Where one output row or column reads: two source positions and their weights (nearest: one, weight 1). */
export interface AxisSampling {
  readonly i0: Int32Array
  readonly i1: Int32Array
  readonly w0: Float32Array
  readonly w1: Float32Array
  /** out == in: every output copies its own position (torch's shortcut; no arithmetic at all) */
  readonly identity: boolean
}

const f32 = Math.fround

/**
 * torch's index mapping for one axis of F.interpolate(size=...) on the CPU, in its float32
 * arithmetic: bilinear takes src = max(scale·(dst + 0.5) - 0.5, 0) with scale = in/out (float32;
 * the product in double, rounded once), or src = scale·dst with scale = (in-1)/(out-1) when
 * `alignCorners`; i0 = trunc(src), i1 = min(i0 + 1, in - 1), w1 = src - i0, w0 = 1 - w1.
 * Nearest takes floor(dst·scale) clamped to in - 1 (dst >> 1 when out = 2·in).
 */
export function axisSampling(inSize: number, outSize: number, mode: ResizeMode, alignCorners: boolean): AxisSampling {
  const i0 = new Int32Array(outSize), i1 = new Int32Array(outSize)
  const w0 = new Float32Array(outSize), w1 = new Float32Array(outSize)
  const identity = inSize === outSize
  for (let d = 0; d < outSize; d++) {
    let a = d, bb = d, l1 = 0
    if (!identity && mode === 'nearest') {
      a = bb = outSize === 2 * inSize ? d >> 1 : Math.min(Math.floor(f32(d * f32(inSize / outSize))), inSize - 1)
    } else if (!identity) {
      let src: number
      if (alignCorners) src = f32(d * (outSize > 1 ? f32((inSize - 1) / (outSize - 1)) : 0))
      else src = f32(Math.max(f32(inSize / outSize) * (d + 0.5) - 0.5, 0))
      a = Math.trunc(src)
      bb = a < inSize - 1 ? a + 1 : a
      l1 = Math.min(Math.max(f32(src - a), 0), 1)
    }
    i0[d] = a; i1[d] = bb; w1[d] = l1; w0[d] = f32(1 - l1)
  }
  return { i0, i1, w0, w1, identity }
}

/**
 * Resample one axis: w0·x[i0] + w1·x[i1] along `axis` (nearest: a gather). The axis is moved to
 * the front first: gather's VJP is a product with the one-hot matrix of the indices per row of
 * the axes before it, so a leading axis makes that one (in, out) matrix instead of one per row.
 */
function resampleAxis(x: Tensor, axis: number, s: AxisSampling, mode: ResizeMode): Tensor {
  if (s.identity) return x
  const bl = x.builder
  const n = s.i0.length
  const lead = x.moveAxis(axis, 0)
  const g0 = lead.gather(bl.constant(s.i0, [n], 'int32'), 0)
  if (mode === 'nearest') return g0.moveAxis(0, axis)
  const wshape = lead.shape.map((_, i) => (i === 0 ? n : 1))
  const g1 = lead.gather(bl.constant(s.i1, [n], 'int32'), 0)
  return g0.mul(bl.constant(s.w0, wshape)).add(g1.mul(bl.constant(s.w1, wshape))).moveAxis(0, axis)
}

/**
 * torch.nn.functional.interpolate(x, size=[h, w], mode, align_corners) on NCHW float32 input.
 * Composed from gathers, products and sums (see docs/ARCHITECTURE.md, "Composite operations"):
 * width first, then height, which is torch's order of operations
 * (wh0·(ww0·x00 + ww1·x01) + wh1·(ww0·x10 + ww1·x11)).
 */
export function resize(x: Tensor, size: readonly [number, number], opts: ResizeOptions = {}): Tensor {
  const OP = 'resize'
  const mode = opts.mode ?? 'bilinear'
  if (mode !== 'bilinear' && mode !== 'nearest') throw paramError(OP, `mode ${JSON.stringify(mode)} is not supported (bilinear or nearest)`)
  const alignCorners = opts.alignCorners ?? false
  if (alignCorners && mode === 'nearest') throw paramError(OP, 'alignCorners applies to bilinear only (torch refuses it for nearest)')
  const [h, w] = spatialSizes(OP, x, size)
  const byW = resampleAxis(x, 3, axisSampling(w, size[1], mode, alignCorners), mode)
  return resampleAxis(byW, 2, axisSampling(h, size[0], mode, alignCorners), mode)
}
