import type { HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'

/** torch.nn.Linear: y = x Wᵀ + b with W of shape (out, in). */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  const y = x.matmul(weight.mT)
  return bias ? y.add(bias) : y
}

/** torch.nn.Linear's default init: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)). */
export function initLinear(key: random.Key, inDim: number, outDim: number, bias = true): { weight: HostTensor; bias?: HostTensor } {
  const [kw, kb] = random.splitKey(key, 2) as [random.Key, random.Key]
  const bound = 1 / Math.sqrt(inDim)
  const u = (k: random.Key, n: number) => random.uniformHost(k, n).map((v) => (2 * v - 1) * bound)
  const weight = tensorOf(u(kw, inDim * outDim), [outDim, inDim])
  return bias ? { weight, bias: tensorOf(u(kb, outDim), [outDim]) } : { weight }
}
