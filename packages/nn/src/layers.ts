import type { Aval, HostTensor, Named, Tensor, WeightInit } from '@tessera/core'
import { TesseraError, initLinear, linear, prefixed, random, scoped } from '@tessera/core'
import type { Activation } from './activations.js'
import { activations } from './activations.js'

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
        out = { ...out, ...prefixed(p, `${i}.`) }
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
        const p = scoped(params, `${i}.`)
        if (!p.weight) throw new TesseraError('input', 'mlp', `missing parameter ${i}.weight`)
        h = linear(h, { weight: p.weight, bias: p.bias })
        if (i < layers - 1) h = activations[activation](h)
      }
      return h
    },
  }
}
