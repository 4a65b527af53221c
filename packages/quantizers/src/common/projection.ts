import type { Aval, HostTensor, Named, Tensor } from '@tessera/core'
import { initLinear, linear, random, tensorOf } from '@tessera/core'

/**
 * The optional `project_in` / `project_out` pair many quantizers share: linear maps between the
 * model dimension and the codebook dimension, present only when the two differ.
 */
export interface Projection {
  readonly present: boolean
  readonly bias: boolean
  readonly dim: number
  readonly codebookDims: number
}

export function projectionSpecs(p: Projection, prefix = ''): Record<string, Aval> {
  if (!p.present) return {}
  const s: Record<string, Aval> = {
    [`${prefix}project_in.weight`]: { shape: [p.codebookDims, p.dim], dtype: 'float32' },
    [`${prefix}project_out.weight`]: { shape: [p.dim, p.codebookDims], dtype: 'float32' },
  }
  if (p.bias) {
    s[`${prefix}project_in.bias`] = { shape: [p.codebookDims], dtype: 'float32' }
    s[`${prefix}project_out.bias`] = { shape: [p.dim], dtype: 'float32' }
  }
  return s
}

export function initProjection(p: Projection, key: random.Key, prefix = ''): Record<string, HostTensor> {
  if (!p.present) return {}
  const [ki, ko] = random.splitKey(key, 2) as [random.Key, random.Key]
  // torch's default Linear init, as the reference's nn.Linear projections start from
  const pin = initLinear(ki, p.dim, p.codebookDims, 'torch', p.bias)
  const pout = initLinear(ko, p.codebookDims, p.dim, 'torch', p.bias)
  const out: Record<string, HostTensor> = { [`${prefix}project_in.weight`]: pin.weight, [`${prefix}project_out.weight`]: pout.weight }
  if (p.bias) {
    out[`${prefix}project_in.bias`] = pin.bias!
    out[`${prefix}project_out.bias`] = pout.bias!
  }
  return out
}

export function projectIn(p: Projection, params: Named<Tensor>, x: Tensor, prefix = ''): Tensor {
  return p.present ? linear(x, { weight: params[`${prefix}project_in.weight`]!, bias: p.bias ? params[`${prefix}project_in.bias`] : undefined }) : x
}

export function projectOut(p: Projection, params: Named<Tensor>, x: Tensor, prefix = ''): Tensor {
  return p.present ? linear(x, { weight: params[`${prefix}project_out.weight`]!, bias: p.bias ? params[`${prefix}project_out.bias`] : undefined }) : x
}

/**
 * A random orthogonal d×d matrix (torch.nn.init.orthogonal_: QR of a normal matrix with the signs
 * of R's diagonal folded into Q), built on the host with Gram-Schmidt in float64.
 */
export function orthogonalHost(key: random.Key, d: number): HostTensor {
  const g = random.normalHost(key, d * d)
  const cols: number[][] = []
  for (let j = 0; j < d; j++) {
    const v = Array.from({ length: d }, (_, i) => g[i * d + j]!)
    for (const q of cols) {
      const dot = q.reduce((s, qi, i) => s + qi * v[i]!, 0)
      for (let i = 0; i < d; i++) v[i]! -= dot * q[i]!
    }
    const n = Math.hypot(...v)
    cols.push(v.map((x) => x / n))
  }
  const data = new Float32Array(d * d)
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) data[i * d + j] = cols[j]![i]!
  return tensorOf(data, [d, d])
}
