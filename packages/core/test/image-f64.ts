/**
 * Direct float64 implementations of torch's conv2d, F.interpolate (bilinear, nearest) and
 * adaptive_avg_pool2d on NCHW arrays, written from torch's definitions as loops over output
 * positions, to test the composite image operations of src/image against (core's evaluator here,
 * every backend in the quantizers' image-lanes test).
 */

export interface Conv2dSpec {
  readonly stride: readonly [number, number]
  readonly padding: readonly [number, number]
  readonly dilation: readonly [number, number]
  readonly groups: number
}

export function conv2dF64(
  x: ArrayLike<number>, xs: readonly number[], w: ArrayLike<number>, ws: readonly number[], bias: ArrayLike<number> | undefined, s: Conv2dSpec,
): { data: Float64Array; shape: number[] } {
  const [B, C, H, W] = xs as [number, number, number, number]
  const [CO, CG, KH, KW] = ws as [number, number, number, number]
  const HO = Math.floor((H + 2 * s.padding[0] - s.dilation[0] * (KH - 1) - 1) / s.stride[0]) + 1
  const WO = Math.floor((W + 2 * s.padding[1] - s.dilation[1] * (KW - 1) - 1) / s.stride[1]) + 1
  const OG = CO / s.groups
  const out = new Float64Array(B * CO * HO * WO)
  for (let b = 0; b < B; b++)
    for (let co = 0; co < CO; co++) {
      const g = Math.floor(co / OG)
      for (let oy = 0; oy < HO; oy++)
        for (let ox = 0; ox < WO; ox++) {
          let acc = bias ? bias[co]! : 0
          for (let ci = 0; ci < CG; ci++)
            for (let ky = 0; ky < KH; ky++)
              for (let kx = 0; kx < KW; kx++) {
                const iy = oy * s.stride[0] - s.padding[0] + ky * s.dilation[0]
                const ix = ox * s.stride[1] - s.padding[1] + kx * s.dilation[1]
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue
                acc += x[((b * C + g * CG + ci) * H + iy) * W + ix]! * w[((co * CG + ci) * KH + ky) * KW + kx]!
              }
          out[((b * CO + co) * HO + oy) * WO + ox] = acc
        }
    }
  return { data: out, shape: [B, CO, HO, WO] }
}

const f32 = Math.fround

/** torch's source position on one axis (CPU, float32 arithmetic, as in UpSample.h). */
function source(mode: 'bilinear' | 'nearest', alignCorners: boolean, inSize: number, outSize: number, d: number): { a: number; b: number; l0: number; l1: number } {
  if (inSize === outSize) return { a: d, b: d, l0: 1, l1: 0 }
  if (mode === 'nearest') {
    const a = outSize === 2 * inSize ? d >> 1 : Math.min(Math.floor(f32(d * f32(inSize / outSize))), inSize - 1)
    return { a, b: a, l0: 1, l1: 0 }
  }
  const src = alignCorners
    ? f32(d * (outSize > 1 ? f32((inSize - 1) / (outSize - 1)) : 0))
    : f32(Math.max(f32(inSize / outSize) * (d + 0.5) - 0.5, 0))
  const a = Math.floor(src)
  const l1 = f32(src - a)
  return { a, b: Math.min(a + 1, inSize - 1), l0: f32(1 - l1), l1 }
}

export function resizeF64(x: ArrayLike<number>, xs: readonly number[], size: readonly [number, number], mode: 'bilinear' | 'nearest', alignCorners: boolean): { data: Float64Array; shape: number[] } {
  const [B, C, H, W] = xs as [number, number, number, number]
  const [HO, WO] = size
  const out = new Float64Array(B * C * HO * WO)
  for (let p = 0; p < B * C; p++)
    for (let oy = 0; oy < HO; oy++) {
      const sy = source(mode, alignCorners, H, HO, oy)
      for (let ox = 0; ox < WO; ox++) {
        const sx = source(mode, alignCorners, W, WO, ox)
        const at = (y: number, xx: number) => x[(p * H + y) * W + xx]!
        out[(p * HO + oy) * WO + ox] =
          sy.l0 * (sx.l0 * at(sy.a, sx.a) + sx.l1 * at(sy.a, sx.b)) + sy.l1 * (sx.l0 * at(sy.b, sx.a) + sx.l1 * at(sy.b, sx.b))
      }
    }
  return { data: out, shape: [B, C, HO, WO] }
}

export function adaptiveAvgPoolF64(x: ArrayLike<number>, xs: readonly number[], size: readonly [number, number]): { data: Float64Array; shape: number[] } {
  const [B, C, H, W] = xs as [number, number, number, number]
  const [HO, WO] = size
  const out = new Float64Array(B * C * HO * WO)
  for (let p = 0; p < B * C; p++)
    for (let oy = 0; oy < HO; oy++) {
      const y0 = Math.floor((oy * H) / HO), y1 = Math.ceil(((oy + 1) * H) / HO)
      for (let ox = 0; ox < WO; ox++) {
        const x0 = Math.floor((ox * W) / WO), x1 = Math.ceil(((ox + 1) * W) / WO)
        let s = 0
        for (let y = y0; y < y1; y++) for (let xx = x0; xx < x1; xx++) s += x[(p * H + y) * W + xx]!
        out[(p * HO + oy) * WO + ox] = s / ((y1 - y0) * (x1 - x0))
      }
    }
  return { data: out, shape: [B, C, HO, WO] }
}
