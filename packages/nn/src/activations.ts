import type { Tensor } from '@tessera/core'
import { where } from '@tessera/core'

/** max(x, 0) with torch's gradient convention (0 at x = 0), unlike Tensor.relu (maximum splits ties). */
export function relu(x: Tensor): Tensor {
  return where(x.gt(0), x, 0)
}

export function leakyRelu(x: Tensor, slope = 0.01): Tensor {
  return where(x.gt(0), x, x.mul(slope))
}

export function sigmoid(x: Tensor): Tensor {
  return x.sigmoid()
}

/** x * sigmoid(x) (torch.nn.SiLU). */
export function silu(x: Tensor): Tensor {
  return x.mul(x.sigmoid())
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI)

/** GELU, tanh approximation (torch's approximate='tanh'). */
export function gelu(x: Tensor): Tensor {
  const inner = x.add(x.mul(x).mul(x).mul(0.044715)).mul(SQRT_2_OVER_PI)
  return x.mul(0.5).mul(inner.tanh().add(1))
}

export type Activation = 'relu' | 'gelu' | 'silu' | 'tanh' | 'sigmoid' | 'identity'

export const activations: { readonly [K in Activation]: (x: Tensor) => Tensor } = {
  relu,
  gelu,
  silu,
  tanh: (x) => x.tanh(),
  sigmoid,
  identity: (x) => x,
}
