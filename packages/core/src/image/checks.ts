import type { Tensor } from '../builder.js'
import { fmtShape } from '../dtype.js'
import { dtypeError, paramError, shapeError } from '../error.js'

/**
 * The checks of an operation that maps an NCHW float32 input to a new spatial size (resize,
 * adaptive pooling), in order: dtype, rank, `size` as two positive integers, a non-empty spatial
 * input. Returns the input's (height, width). The errors name `op`.
 */
export function spatialSizes(op: string, x: Tensor, size: readonly [number, number]): readonly [number, number] {
  if (x.dtype !== 'float32') throw dtypeError(op, `input has dtype ${x.dtype}; expected float32`)
  if (x.rank !== 4) throw shapeError(op, `input must be (batch, channels, height, width), got ${fmtShape(x.shape)}`)
  if (!Array.isArray(size) || size.length !== 2 || size.some((d) => !Number.isInteger(d) || d < 1))
    throw paramError(op, `size ${JSON.stringify(size)} must be two positive integers (height, width)`)
  const [h, w] = [x.shape[2]!, x.shape[3]!]
  if (h < 1 || w < 1) throw shapeError(op, `input ${fmtShape(x.shape)} has an empty spatial axis`)
  return [h, w]
}
