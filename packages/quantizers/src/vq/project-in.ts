import type { Aval, HostTensor, Named, Tensor } from '@tessera/core'
import { linear, random, tensorOf } from '@tessera/core'
import type { Projection } from '../common/projection.js'
import { initProjection, projectIn, projectionSpecs } from '../common/projection.js'

/**
 * VectorQuantize's `project_in` with `layernorm_after_project_in`: the reference makes it
 * `nn.Sequential(Linear, LayerNorm)`, so the linear layer's state-dict names become
 * `project_in.0.*` and the LayerNorm's (weight ones, bias zeros, eps 1e-5) `project_in.1.*`.
 * Without projections there is no project_in and the option does nothing, as in the reference.
 */

const LN_EPS = 1e-5

const renameIn = <T>(rec: Record<string, T>, layernorm: boolean): Record<string, T> =>
  layernorm ? Object.fromEntries(Object.entries(rec).map(([k, v]) => [k.replace(/^project_in\./, 'project_in.0.'), v])) : rec

export function vqProjectionSpecs(p: Projection, layernorm: boolean): Record<string, Aval> {
  const s = renameIn(projectionSpecs(p), layernorm && p.present)
  if (layernorm && p.present) {
    s['project_in.1.weight'] = { shape: [p.codebookDims], dtype: 'float32' }
    s['project_in.1.bias'] = { shape: [p.codebookDims], dtype: 'float32' }
  }
  return s
}

export function initVQProjection(p: Projection, key: random.Key, layernorm: boolean): Record<string, HostTensor> {
  const s = renameIn(initProjection(p, key), layernorm && p.present)
  if (layernorm && p.present) {
    s['project_in.1.weight'] = tensorOf(new Float32Array(p.codebookDims).fill(1), [p.codebookDims])
    s['project_in.1.bias'] = tensorOf(new Float32Array(p.codebookDims), [p.codebookDims])
  }
  return s
}

export function vqProjectIn(p: Projection, params: Named<Tensor>, x: Tensor, layernorm: boolean): Tensor {
  if (!(layernorm && p.present)) return projectIn(p, params, x)
  const y = linear(x, { weight: params['project_in.0.weight']!, bias: p.bias ? params['project_in.0.bias'] : undefined })
  return layerNorm(y, params['project_in.1.weight']!, params['project_in.1.bias']!)
}

/**
 * torch's LayerNorm over the last axis as its CPU kernel computes it: biased variance,
 * rstd = 1/sqrt(var + eps), y = (x·rstd − mean·rstd)·weight + bias.
 */
export function layerNorm(x: Tensor, weight: Tensor, bias: Tensor, eps = LN_EPS): Tensor {
  const mean = x.mean(-1, true)
  const variance = x.sub(mean).square().mean(-1, true)
  const rstd = variance.add(eps).sqrt().recip()
  return x.mul(rstd).sub(mean.mul(rstd)).mul(weight).add(bias)
}
