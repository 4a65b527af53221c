import type { Tensor } from '../builder.js'
import { TesseraError } from '../error.js'
import type { HostTensor } from '../host-tensor.js'
import { zerosHost } from '../host-tensor.js'
import type { Key } from '../random.js'
import { splitKey } from '../random.js'
import { fanInUniform, kaimingUniform, xavierUniform } from './init.js'

export interface LinearParams<T> {
  /** (out, in), as torch.nn.Linear stores it */
  readonly weight: T
  /** (out); absent for a layer without bias */
  readonly bias?: T | undefined
}

/** torch.nn.Linear: y = x Wᵀ + b with W of shape (out, in); x may have any leading axes. */
export function linear(x: Tensor, p: LinearParams<Tensor>): Tensor {
  const inDim = p.weight.shape[1]
  if (x.shape[x.rank - 1] !== inDim)
    throw new TesseraError('shape', 'linear', `input [${x.shape.join(',')}] has last dimension ${x.shape[x.rank - 1]}; the weight expects ${inDim}`)
  const y = x.matmul(p.weight.mT)
  return p.bias ? y.add(p.bias) : y
}

/**
 * How a linear layer's weight is drawn: kaiming (relu gain, zero bias), xavier (zero bias), or
 * torch's own default (weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)), what the reference's
 * quantizer projections start from).
 */
export type WeightInit = 'kaiming' | 'xavier' | 'torch'

/** Parameters of one linear layer: `weight` (out, in) and, when `bias`, `bias` (out). */
export function initLinear(key: Key, inDim: number, outDim: number, init: WeightInit = 'kaiming', bias = true): { weight: HostTensor; bias?: HostTensor } {
  const [kw, kb] = splitKey(key, 2) as [Key, Key]
  const shape = [outDim, inDim]
  const weight = init === 'kaiming' ? kaimingUniform(kw, shape) : init === 'xavier' ? xavierUniform(kw, shape) : fanInUniform(kw, shape, inDim)
  if (!bias) return { weight }
  return { weight, bias: init === 'torch' ? fanInUniform(kb, [outDim], inDim) : zerosHost([outDim], 'float32') }
}
