import type { Tensor } from '../builder.js'

/**
 * Shannon entropy of probabilities along the last axis, with the reference's clamp inside the log:
 * -Σ p·log(max(p, 1e-5)). The clamp keeps log finite for p = 0 (where p·log p is 0 anyway).
 * The negation comes first (on p, not on the sum) because LFQ's pinned gradients depend on the
 * order in which p's uses are recorded; the value is the same either way.
 */
export function entropy(p: Tensor): Tensor {
  return p.neg().mul(p.maximum(1e-5).log()).sum(-1)
}
