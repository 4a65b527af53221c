import type { Tensor } from '@tessera/core'
import { foldKey, straightThrough, where } from '@tessera/core'
import { erfinv } from '../fsp/special.js'
import type { VQConfig } from './config.js'
import { rotateTo } from './gradient-routing.js'
import { requireKey } from './sampling.js'

/**
 * DiVeQ (the reference's `directional_reparam`, figure 1 of https://openreview.net/forum?id=KRVnpTbx7R)
 * and the synchronous update rule of vqtorch (`sync_update_v`, eq. 21 of
 * https://minyoungg.github.io/vqtorch/assets/draft_050523.pdf), as the reference applies them to
 * the quantized rows in training.
 */

/**
 * ||v|| along the last axis (kept), with torch's gradient at the zero vector (0, where sqrt's
 * derivative would give 0·∞ = NaN): a code can equal its input exactly, e.g. a revived code.
 */
export function safeNorm(v: Tensor): Tensor {
  const s = v.square().sum(-1, true)
  const pos = s.gt(0)
  return where(pos, where(pos, s, 1).sqrt(), 0)
}

/**
 * Standard normal draws from uniforms in [0, 1) by the inverse CDF, √2·erfinv(2u − 1); u is moved off
 * 0, where the inverse CDF is −∞. The reference draws with `randn_like`: only the distribution matters.
 */
export const normalFromUniform = (u: Tensor): Tensor => erfinv(u.maximum(2 ** -24).mul(2).sub(1)).mul(Math.SQRT2)

/**
 * x + dir·||q − x|| with dir = normalize(q − x + √variance·noise) held constant for the gradient:
 * the output's magnitude of error is the true one, so its gradient reaches the input and the code,
 * while noise perturbs only the direction. With variance 0 (or no noise) the value is q up to rounding.
 */
export function directionalReparam(x: Tensor, q: Tensor, variance: number, noise?: Tensor): Tensor {
  const err = q.sub(x)
  const noised = noise && variance > 0 ? err.add(noise.mul(Math.fround(Math.sqrt(variance)))) : err
  const unit = noised.l2Normalize(-1, 1e-6).stopGradient()
  return x.add(unit.mul(safeNorm(err)))
}

/** q + v·(q − sg(q)): the same value exactly, the gradient scaled by 1 + v. */
export const syncUpdate = (q: Tensor, v: number): Tensor => q.add(q.sub(q.stopGradient()).mul(v))

/** Key tag of DiVeQ's noise (VectorQuantize's other tags are 1 to 5). */
const TAG_DIVEQ = 6

export interface RouteCall {
  /** Whether the input carries a gradient (the reference routes only then); default true. */
  readonly inputRequiresGrad?: boolean
  readonly key?: Tensor
  readonly where: string
}

/**
 * The training-time routing of gradients from the quantized rows `q` to the codebook's input `x`
 * (both (..., d)): the rotation trick, DiVeQ or the straight-through estimator, then the synchronous
 * update rule, as the reference orders them.
 */
export function routeToInput(cfg: VQConfig, x: Tensor, q: Tensor, call: RouteCall): Tensor {
  let out = q
  if (cfg.route_gradients_to_input && (call.inputRequiresGrad ?? true)) {
    if (cfg.rotation_trick) out = rotateTo(x, q)
    else if (cfg.directional_reparam) {
      const variance = cfg.directional_reparam_variance
      const noise =
        variance > 0
          ? normalFromUniform(q.builder.randomUniform(foldKey(requireKey(call.key, call.where, 'directional_reparam with a variance > 0 (the noise)'), TAG_DIVEQ), q.shape))
          : undefined
      out = directionalReparam(x, q, variance, noise)
    } else out = straightThrough(x, q)
  }
  return cfg.sync_update_v > 0 ? syncUpdate(out, cfg.sync_update_v) : out
}
