import type { Shape } from '../dtype.js'
import { sizeOf } from '../dtype.js'
import { TesseraError } from '../error.js'
import type { HostTensor } from '../host-tensor.js'
import { tensorOf } from '../host-tensor.js'
import type { Key } from '../random.js'
import { uniformHost } from '../random.js'

/** fan_in and fan_out of a weight laid out as torch does: (out, in, ...receptive field). */
export function fans(shape: Shape): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new TesseraError('shape', 'init', `fan in/out need a weight of rank >= 2, got [${shape.join(',')}]`)
  const receptive = sizeOf(shape.slice(2))
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive }
}

/** U(-bound, bound) on the host: (2u - 1) * bound in float64, rounded once to float32. */
function uniform(key: Key, shape: Shape, bound: number): HostTensor {
  const u = uniformHost(key, sizeOf(shape))
  for (let i = 0; i < u.length; i++) u[i] = (2 * u[i]! - 1) * bound
  return tensorOf(u, shape)
}

/**
 * Kaiming (He) uniform: U(-b, b) with b = gain * sqrt(3 / fan_in); gain sqrt(2) for relu, 1 for
 * linear/identity, and sqrt(2 / (1 + a^2)) for leaky relu with slope a.
 */
export function kaimingUniform(key: Key, shape: Shape, nonlinearity: 'relu' | 'linear' | { readonly leakyRelu: number } = 'relu'): HostTensor {
  const gain = nonlinearity === 'relu' ? Math.SQRT2 : nonlinearity === 'linear' ? 1 : Math.sqrt(2 / (1 + nonlinearity.leakyRelu ** 2))
  return uniform(key, shape, gain * Math.sqrt(3 / fans(shape).fanIn))
}

/** Xavier (Glorot) uniform: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)). */
export function xavierUniform(key: Key, shape: Shape, gain = 1): HostTensor {
  const { fanIn, fanOut } = fans(shape)
  return uniform(key, shape, gain * Math.sqrt(6 / (fanIn + fanOut)))
}

/**
 * U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's default Linear init, for the weight (kaiming with
 * leaky relu slope sqrt(5) reduces to this bound) and for the bias. The bound is computed as
 * 1/sqrt(fan_in) directly, which the quantizers' golden initial states depend on bit for bit.
 */
export function fanInUniform(key: Key, shape: Shape, fanIn: number): HostTensor {
  return uniform(key, shape, 1 / Math.sqrt(fanIn))
}
