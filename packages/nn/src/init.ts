import type { HostTensor, Shape } from '@tessera/core'
import { TesseraError, random, sizeOf, tensorOf } from '@tessera/core'

/** fan_in and fan_out of a weight laid out as torch does: (out, in, ...receptive field). */
export function fans(shape: Shape): { fanIn: number; fanOut: number } {
  if (shape.length < 2) throw new TesseraError('shape', 'init', `fan in/out need a weight of rank >= 2, got [${shape.join(',')}]`)
  const receptive = sizeOf(shape.slice(2))
  return { fanIn: shape[1]! * receptive, fanOut: shape[0]! * receptive }
}

function uniform(key: random.Key, shape: Shape, bound: number): HostTensor {
  const u = random.uniformHost(key, sizeOf(shape))
  for (let i = 0; i < u.length; i++) u[i] = (2 * u[i]! - 1) * bound
  return tensorOf(u, shape)
}

/**
 * Kaiming (He) uniform: U(-b, b) with b = gain * sqrt(3 / fan_in); gain sqrt(2) for relu, 1 for
 * linear/identity, and sqrt(2 / (1 + a^2)) for leaky relu with slope a (torch's default
 * Linear init is leaky_relu with a = sqrt(5), i.e. b = 1 / sqrt(fan_in)).
 */
export function kaimingUniform(
  key: random.Key,
  shape: Shape,
  nonlinearity: 'relu' | 'linear' | { readonly leakyRelu: number } = 'relu',
): HostTensor {
  const gain = nonlinearity === 'relu' ? Math.SQRT2 : nonlinearity === 'linear' ? 1 : Math.sqrt(2 / (1 + nonlinearity.leakyRelu ** 2))
  return uniform(key, shape, gain * Math.sqrt(3 / fans(shape).fanIn))
}

/** Xavier (Glorot) uniform: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)). */
export function xavierUniform(key: random.Key, shape: Shape, gain = 1): HostTensor {
  const { fanIn, fanOut } = fans(shape)
  return uniform(key, shape, gain * Math.sqrt(6 / (fanIn + fanOut)))
}

/** U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch's Linear bias init. */
export function fanInUniform(key: random.Key, shape: Shape, fanIn: number): HostTensor {
  return uniform(key, shape, 1 / Math.sqrt(fanIn))
}

export function zeros(shape: Shape): HostTensor {
  return tensorOf(new Float32Array(sizeOf(shape)), shape)
}
