import type { Tensor } from '../builder.js'
import { stack } from '../builder.js'
import { fmtShape } from '../dtype.js'
import { dtypeError, paramError, shapeError } from '../error.js'

/** A size per spatial axis (height, width), or one size for both, as torch accepts. */
export type Pair = number | readonly [number, number]

export interface Conv2dOptions {
  /** (out_channels), added to every output position */
  readonly bias?: Tensor
  readonly stride?: Pair
  /** zeros added on both sides of each spatial axis */
  readonly padding?: Pair
  readonly dilation?: Pair
  readonly groups?: number
}

const OP = 'conv2d'

function pairOf(name: string, v: Pair | undefined, dflt: number, min: number): [number, number] {
  const p: readonly number[] = v === undefined ? [dflt, dflt] : typeof v === 'number' ? [v, v] : v
  if (p.length !== 2 || p.some((d) => !Number.isInteger(d) || d < min))
    throw paramError(OP, `${name} ${JSON.stringify(v)} must be an integer >= ${min} or a pair of them`)
  return [p[0]!, p[1]!]
}

/** Output size of one spatial axis, as torch computes it: floor((n + 2p - d(k-1) - 1) / s) + 1. */
export function convOutSize(n: number, k: number, stride: number, padding: number, dilation: number): number {
  return Math.floor((n + 2 * padding - dilation * (k - 1) - 1) / stride) + 1
}

/**
 * torch.nn.functional.conv2d on NCHW float32 input with an (out, in / groups, kh, kw) weight.
 *
 * Composed from IR primitives rather than added as one (see docs/ARCHITECTURE.md, "Composite
 * operations"): the zero-padded input is sliced once per kernel tap (a strided slice for stride,
 * an offset of tap * dilation), the taps are stacked into (b, in·kh·kw, ho·wo) patches in the
 * weight's (in, kh, kw) order, and each group is one matrix product with its weights. Its VJPs
 * (slice -> pad, matmul -> matmul) and its code on every backend come from those primitives'.
 */
export function conv2d(x: Tensor, weight: Tensor, opts: Conv2dOptions = {}): Tensor {
  if (x.dtype !== 'float32') throw dtypeError(OP, `input has dtype ${x.dtype}; expected float32`)
  if (weight.dtype !== 'float32') throw dtypeError(OP, `weight has dtype ${weight.dtype}; expected float32`)
  if (x.rank !== 4) throw shapeError(OP, `input must be (batch, channels, height, width), got ${fmtShape(x.shape)}`)
  if (weight.rank !== 4) throw shapeError(OP, `weight must be (out_channels, in_channels / groups, kh, kw), got ${fmtShape(weight.shape)}`)
  const groups = opts.groups ?? 1
  if (!Number.isInteger(groups) || groups < 1) throw paramError(OP, `groups ${groups} must be a positive integer`)
  const [sh, sw] = pairOf('stride', opts.stride, 1, 1)
  const [ph, pw] = pairOf('padding', opts.padding, 0, 0)
  const [dh, dw] = pairOf('dilation', opts.dilation, 1, 1)
  const [b, c, h, w] = x.shape as [number, number, number, number]
  const [co, cg, kh, kw] = weight.shape as [number, number, number, number]
  if (c % groups !== 0) throw shapeError(OP, `input channels ${c} (input ${fmtShape(x.shape)}) are not divisible by groups ${groups}`)
  if (co % groups !== 0) throw shapeError(OP, `out channels ${co} (weight ${fmtShape(weight.shape)}) are not divisible by groups ${groups}`)
  if (cg * groups !== c)
    throw shapeError(OP, `weight ${fmtShape(weight.shape)} expects ${cg * groups} input channels (${cg} per group x ${groups} groups); input ${fmtShape(x.shape)} has ${c}`)
  if (kh < 1 || kw < 1) throw shapeError(OP, `weight ${fmtShape(weight.shape)} has an empty kernel`)
  const ho = convOutSize(h, kh, sh, ph, dh)
  const wo = convOutSize(w, kw, sw, pw, dw)
  if (ho < 1 || wo < 1)
    throw shapeError(OP, `kernel ${kh}x${kw} (dilation ${dh}x${dw}) is larger than the padded input ${h + 2 * ph}x${w + 2 * pw} of ${fmtShape(x.shape)}`)
  if (opts.bias && (opts.bias.dtype !== 'float32' || opts.bias.rank !== 1 || opts.bias.shape[0] !== co))
    throw shapeError(OP, `bias must be float32 (${co}), got ${opts.bias.dtype}${fmtShape(opts.bias.shape)}`)

  const xp = ph || pw ? x.pad([0, 0, ph, pw], [0, 0, ph, pw]) : x
  const taps: Tensor[] = []
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++)
      taps.push(xp.slice([0, 0, i * dh, j * dw], [b, c, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1], [1, 1, sh, sw]))
  const kk = kh * kw, n = ho * wo
  // (b, c, kh·kw, ho, wo): channel-major, then taps row by row, the order of the weight's (in, kh, kw)
  const patches = stack(taps, 2)
  let y: Tensor
  if (groups === 1) {
    const rows = patches.reshape([b, c * kk, n]).transpose([0, 2, 1]).reshape([b * n, c * kk])
    y = rows.matmul(weight.reshape([co, c * kk]).mT).reshape([b, ho, wo, co]).transpose([0, 3, 1, 2])
  } else {
    const og = co / groups
    const rows = patches.reshape([b, groups, cg * kk, n]).transpose([1, 0, 3, 2]).reshape([groups, b * n, cg * kk])
    const wg = weight.reshape([groups, og, cg * kk]).transpose([0, 2, 1])
    y = rows.matmul(wg).reshape([groups, b, ho, wo, og]).transpose([1, 0, 4, 2, 3]).reshape([b, co, ho, wo])
  }
  return opts.bias ? y.add(opts.bias.reshape([1, co, 1, 1])) : y
}
