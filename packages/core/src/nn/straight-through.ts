import type { Tensor } from '../builder.js'

/**
 * The straight-through estimator: the value of `y`, the gradient of the identity to `x`
 * (x + stopGradient(y - x)). It lets a non-differentiable step (round, sign, nearest code) pass
 * gradients through as if it were not there. The forward value is x + (y - x), which equals `y`
 * only up to float32 rounding in general (exactly where y - x is exact, as for round and floor).
 */
export function straightThrough(x: Tensor, y: Tensor): Tensor {
  return x.add(y.sub(x).stopGradient())
}
