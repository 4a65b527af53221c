import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random } from '@tessera/core'
import type { Activation } from './activations.js'
import { activations } from './activations.js'
import { fanInUniform, kaimingUniform, xavierUniform, zeros } from './init.js'
import type { Named } from './named.js'
import { prefixed, scope } from './named.js'

/** torch.nn.Linear: y = x Wᵀ + b with W of shape (out, in); x may have any leading axes. */
export function linear(x: Tensor, p: { readonly weight: Tensor; readonly bias?: Tensor | undefined }): Tensor {
  const inDim = p.weight.shape[1]
  if (x.shape[x.rank - 1] !== inDim)
    throw new TesseraError('shape', 'linear', `input [${x.shape.join(',')}] has last dimension ${x.shape[x.rank - 1]}; the weight expects ${inDim}`)
  const y = x.matmul(p.weight.mT)
  return p.bias ? y.add(p.bias) : y
}

export type WeightInit = 'kaiming' | 'xavier' | 'torch'

/** Parameters of one linear layer: `weight` (out, in) and `bias` (out). */
export function initLinear(key: random.Key, inDim: number, outDim: number, init: WeightInit = 'kaiming', bias = true): Record<string, HostTensor> {
  const [kw, kb] = random.splitKey(key, 2) as [random.Key, random.Key]
  const shape = [outDim, inDim]
  const weight = init === 'kaiming' ? kaimingUniform(kw, shape) : init === 'xavier' ? xavierUniform(kw, shape) : kaimingUniform(kw, shape, { leakyRelu: Math.sqrt(5) })
  if (!bias) return { weight }
  return { weight, bias: init === 'torch' ? fanInUniform(kb, [outDim], inDim) : zeros([outDim]) }
}

/** A multi-layer perceptron: `dims = [in, h1, ..., out]`, the activation between layers (none after the last). */
export interface Mlp {
  readonly dims: readonly number[]
  readonly activation: Activation
  /** Parameter names are `${i}.weight`, `${i}.bias` (prefix them to nest the MLP in a model). */
  init(key: random.Key, init?: WeightInit): Record<string, HostTensor>
  specs(): Record<string, Aval>
  apply(params: Named<Tensor>, x: Tensor): Tensor
}

export function mlp(dims: readonly number[], activation: Activation = 'relu'): Mlp {
  if (dims.length < 2 || dims.some((d) => !Number.isInteger(d) || d < 1))
    throw new TesseraError('config', 'mlp.dims', `needs at least two positive integer sizes, got ${JSON.stringify(dims)}`)
  const layers = dims.length - 1
  return {
    dims,
    activation,
    init(key, init = 'kaiming') {
      const keys = random.splitKey(key, layers)
      let out: Record<string, HostTensor> = {}
      for (let i = 0; i < layers; i++) {
        // the last layer feeds no relu: its weights use the linear gain
        const p = initLinear(keys[i]!, dims[i]!, dims[i + 1]!, i === layers - 1 && init === 'kaiming' ? 'xavier' : init)
        out = { ...out, ...prefixed(String(i), p) }
      }
      return out
    },
    specs() {
      const out: Record<string, Aval> = {}
      for (let i = 0; i < layers; i++) {
        out[`${i}.weight`] = { shape: [dims[i + 1]!, dims[i]!], dtype: 'float32' }
        out[`${i}.bias`] = { shape: [dims[i + 1]!], dtype: 'float32' }
      }
      return out
    },
    apply(params, x) {
      let h = x
      for (let i = 0; i < layers; i++) {
        const p = scope(params, String(i))
        if (!p.weight) throw new TesseraError('input', 'mlp', `missing parameter ${i}.weight`)
        h = linear(h, { weight: p.weight, bias: p.bias })
        if (i < layers - 1) h = activations[activation](h)
      }
      return h
    },
  }
}
