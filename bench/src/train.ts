import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { adam } from '@tessera/nn'
// the demo is an application, not a library package: its modules are imported by path
import { chooseQuantizer } from '../../examples/demo/src/vqvae/choices.js'
import { IMAGE_SIZE } from '../../examples/demo/src/vqvae/mnist.js'
import { makeVqVae } from '../../examples/demo/src/vqvae/model.js'
import { buildTrainStep } from '../../examples/demo/src/vqvae/step.js'

/**
 * One training step of the demo's VQ-VAE (MLP encoder/decoder, FSQ, Adam: forward, reverse-mode
 * gradients and the update as one program), with the demo's default shape (batch 64, hidden 256,
 * 16 tokens) or a small one for --quick. Images are seeded noise in [0, 1]: the step's cost does
 * not depend on the pixels. Outputs: loss and reconstruction error (checked against the reference
 * to a relative 1e-3, since the fused backends differ in summation order).
 */
export async function trainRunner(backend: Backend, quick: boolean) {
  const batch = quick ? 16 : 64
  const hidden = quick ? 64 : 256
  const ch = chooseQuantizer('fsq')
  if (E.isLeft(ch)) throw new Error(String(ch.left))
  const model = makeVqVae(ch.right, { tokens: 16, hidden, output: 'linear' })
  const opt = adam({ lr: 2e-3 })
  if (E.isLeft(opt)) throw opt.left
  const init = model.init(random.keyFromSeed(7))
  const optState = opt.right.init(init.params)
  let s = 3
  const images = tensorOf(Array.from({ length: batch * IMAGE_SIZE }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648)), [batch, IMAGE_SIZE])
  const key = tensorOf([11, 12], [2], 'int32')
  const lr: HostTensor = tensorOf([2e-3], [])
  const step = buildTrainStep(model, opt.right, batch, backend)
  return {
    vectors: batch,
    run: async () => {
      const r = await step.run(init.params, optState, init.state, images, key, lr)
      return [Float32Array.of(r.loss), Float32Array.of(r.mse)]
    },
    dispose: () => step.dispose(),
  }
}
