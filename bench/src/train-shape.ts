/**
 * The TRAIN workload: one training step of the demo's VQ-VAE with its default shape (FSQ levels
 * [8,5,5,5], 32 tokens of 4, hidden width 128: encoder 784-128-128, decoder 128-128-784, linear
 * output, MSE, Adam lr 2e-3), batch 64 (--quick: batch 16, 8 tokens, hidden 64). Every
 * implementation (Tessera, tfjs, PyTorch) starts from the same parameters, Tessera's init with
 * seed 7, and the same batch: seeded noise in [0, 1], since the step's cost does not depend on
 * the pixels.
 */
export function trainShape(quick: boolean) {
  return { batch: quick ? 16 : 64, hidden: quick ? 64 : 128, tokens: quick ? 8 : 32, lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
}
