import type { Tensor } from '@tessera/core'

/**
 * How gradients reach the input through a quantizer. In the forward pass both give (up to float32
 * rounding) the quantized value; they differ only in what the autodiff transform sees.
 */

const safeDiv = (num: Tensor, den: Tensor, eps = 1e-6): Tensor => num.div(den.maximum(eps))
const norm = (t: Tensor): Tensor => t.square().sum(-1, true).sqrt()

/**
 * The rotation trick of Fifty et al. (arXiv:2410.06424, §4.2) as the reference's `rotate_to`:
 * with u = x/|x|, q̂ = q/|q| and w = normalize(u + q̂) (all constants for the gradient),
 * out = (x − 2(x·w)w + 2(x·u)q̂) · |q|/|x|, the rotation taking x's direction onto q's, scaled.
 */
export function rotateTo(src: Tensor, tgt: Tensor): Tensor {
  const normSrc = norm(src)
  const normTgt = norm(tgt)
  const u = safeDiv(src, normSrc)
  const q = safeDiv(tgt, normTgt)
  const w = safeDiv(u.add(q), norm(u.add(q))).stopGradient()
  const e = src
  const ew = e.mul(w).sum(-1, true)
  const eu = e.mul(u.stopGradient()).sum(-1, true)
  const out = e.sub(ew.mul(w).mul(2)).add(eu.mul(q.stopGradient()).mul(2))
  return out.mul(safeDiv(normTgt, normSrc).stopGradient())
}
