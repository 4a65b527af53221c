import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { concat, initLinear, linear, random } from '@tessera/core'
import type { Named } from '../quantizer.js'

/**
 * The implicit neural codebook of QINCo (Huijben et al., arXiv:2401.14732) as the reference's
 * ResidualVQ builds it: for layer q >= 1, an MLP `mlps.{q-1}` maps each code c of the layer's
 * codebook, together with the output x̂ of the layers before it, to the code actually used:
 * h = proj_in([x̂, c]), then `depth` residual blocks h += W2·silu(W1·h + b1) + b2. So every token
 * gets its own codebook (..., K, d). Parameter names are torch's:
 * `mlps.{i}.proj_in.{weight,bias}`, `mlps.{i}.layers.{j}.0.{weight,bias}` (dim -> hidden) and
 * `mlps.{i}.layers.{j}.2.{weight,bias}` (hidden -> dim).
 */
export interface QincoShape {
  /** codebook_dim */
  readonly dim: number
  readonly hidden: number
  readonly depth: number
}

export const mlpPrefix = (i: number) => `mlps.${i}.`

const f32: Aval['dtype'] = 'float32'

/** The parameter avals of MLP `i` (used by layer i + 1). */
export function qincoSpecs(s: QincoShape, i: number): Record<string, Aval> {
  const p = mlpPrefix(i)
  const out: Record<string, Aval> = {
    [`${p}proj_in.weight`]: { shape: [s.dim, 2 * s.dim], dtype: f32 },
    [`${p}proj_in.bias`]: { shape: [s.dim], dtype: f32 },
  }
  for (let j = 0; j < s.depth; j++) {
    out[`${p}layers.${j}.0.weight`] = { shape: [s.hidden, s.dim], dtype: f32 }
    out[`${p}layers.${j}.0.bias`] = { shape: [s.hidden], dtype: f32 }
    out[`${p}layers.${j}.2.weight`] = { shape: [s.dim, s.hidden], dtype: f32 }
    out[`${p}layers.${j}.2.bias`] = { shape: [s.dim], dtype: f32 }
  }
  return out
}

/** torch's default nn.Linear init for every layer of MLP `i`. */
export function initQinco(s: QincoShape, i: number, key: random.Key): Record<string, HostTensor> {
  const p = mlpPrefix(i)
  const keys = random.splitKey(key, 1 + 2 * s.depth)
  const out: Record<string, HostTensor> = {}
  const put = (name: string, k: random.Key, inDim: number, outDim: number) => {
    const l = initLinear(k, inDim, outDim, 'torch', true)
    out[`${name}.weight`] = l.weight
    out[`${name}.bias`] = l.bias!
  }
  put(`${p}proj_in`, keys[0]!, 2 * s.dim, s.dim)
  for (let j = 0; j < s.depth; j++) {
    put(`${p}layers.${j}.0`, keys[1 + 2 * j]!, s.dim, s.hidden)
    put(`${p}layers.${j}.2`, keys[2 + 2 * j]!, s.hidden, s.dim)
  }
  return out
}

const layerOf = (params: Named<Tensor>, name: string) => ({ weight: params[`${name}.weight`]!, bias: params[`${name}.bias`]! })

/** silu(x) = x·sigmoid(x), torch's nn.SiLU. */
const silu = (x: Tensor) => x.mul(x.sigmoid())

/**
 * MLP `i` on codebook `codes` (K, d) conditioned on `condition` (R, d), one row per token (or per
 * beam of a token): the per-row codebooks (R, K, d). Concatenation order is [condition, code], as
 * in the reference.
 */
export function qincoCodes(s: QincoShape, i: number, params: Named<Tensor>, codes: Tensor, condition: Tensor): Tensor {
  const p = mlpPrefix(i)
  const [k, d] = codes.shape as [number, number]
  const r = condition.shape[0]!
  const cond = condition.expandDims(1).broadcastTo([r, k, d])
  const cs = codes.expandDims(0).broadcastTo([r, k, d])
  let h = linear(concat([cond, cs], -1), layerOf(params, `${p}proj_in`))
  for (let j = 0; j < s.depth; j++) {
    const inner = silu(linear(h, layerOf(params, `${p}layers.${j}.0`)))
    h = linear(inner, layerOf(params, `${p}layers.${j}.2`)).add(h)
  }
  return h
}
