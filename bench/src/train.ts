import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { adam } from '@tessera/nn'
// the demo is an application, not a library package: its modules are imported by path
import { chooseQuantizer } from '../../examples/demo/src/vqvae/choices.js'
import { IMAGE_SIZE } from '../../examples/demo/src/vqvae/mnist.js'
import { makeVqVae } from '../../examples/demo/src/vqvae/model.js'
import { buildTrainStep } from '../../examples/demo/src/vqvae/step.js'
import { zerosLike } from '../../examples/demo/src/vqvae/train.js'
import type { TrainTrace } from './train-check.js'
import { TRACE_STEPS } from './train-check.js'
import { trainShape } from './train-shape.js'

export interface TrainSetup {
  readonly shape: ReturnType<typeof trainShape>
  readonly levels: readonly number[]
  readonly tokenDim: number
  /** Parameters by the model's names: `encoder.{0,1}.{weight,bias}`, `decoder.…` (weights (out, in), as torch stores them). */
  readonly params: Record<string, HostTensor>
  readonly images: HostTensor
}

function fsqModel(quick: boolean) {
  const shape = trainShape(quick)
  const ch = chooseQuantizer('fsq')
  if (E.isLeft(ch)) throw new Error(String(ch.left))
  const model = makeVqVae(ch.right, { tokens: shape.tokens, hidden: shape.hidden, output: 'linear' })
  return { shape, choice: ch.right, model }
}

/** The model's initial parameters and the batch, as every TRAIN implementation gets them. */
export function trainSetup(quick: boolean): TrainSetup & { readonly state: Record<string, HostTensor> } {
  const { shape, choice, model } = fsqModel(quick)
  const init = model.init(random.keyFromSeed(7))
  let s = 3
  const images = tensorOf(
    Array.from({ length: shape.batch * IMAGE_SIZE }, () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648),
    [shape.batch, IMAGE_SIZE],
  )
  const levels = (choice.options as { levels: number[] }).levels
  return { shape, levels, tokenDim: choice.tokenDim, params: init.params, state: init.state, images }
}

/**
 * Tessera's step: forward, reverse-mode gradients and the Adam update as one compiled program
 * (the demo's `buildTrainStep`). Each timed call is a real step, as the peers' are: it reads the
 * parameters and optimizer state the last call wrote and writes the new ones into the other of
 * two sets allocated once (the executable's `into`, as the demo's training loop does); the
 * losses of the first steps are checked with parameters carried from step to step.
 */
export async function trainRunner(backend: Backend, quick: boolean) {
  const { shape, model } = fsqModel(quick)
  const opt = adam({ lr: shape.lr, beta1: shape.beta1, beta2: shape.beta2, eps: shape.eps })
  if (E.isLeft(opt)) throw opt.left
  const setup = trainSetup(quick)
  const optState = opt.right.init(setup.params)
  const key = tensorOf([11, 12], [2], 'int32')
  const lr: HostTensor = tensorOf([shape.lr], [])
  const step = buildTrainStep(model, opt.right, shape.batch, backend)
  const sets = [0, 1].map(() => ({ params: zerosLike(setup.params), opt: zerosLike(optState), state: zerosLike(setup.state) }))
  let current = { params: setup.params, opt: optState, state: setup.state }
  let calls = 0
  return {
    vectors: shape.batch,
    run: async () => {
      const r = await step.run(current.params, current.opt, current.state, setup.images, key, lr, sets[calls++ % 2])
      current = { params: r.params, opt: r.opt, state: r.state }
      return [Float32Array.of(r.loss), Float32Array.of(r.mse)]
    },
    firstSteps: async (): Promise<TrainTrace> => {
      let params = setup.params, o = optState, st = setup.state
      const losses: number[] = []
      let indices = new Int32Array(0)
      let encoderDelta = new Float32Array(0)
      for (let t = 0; t < TRACE_STEPS; t++) {
        const r = await step.run(params, o, st, setup.images, key, lr)
        losses.push(r.loss)
        if (t === 0) {
          indices = Int32Array.from(r.indices.data)
          const w0 = setup.params['encoder.0.weight']!.data, w1 = r.params['encoder.0.weight']!.data
          encoderDelta = Float32Array.from(w1, (v, i) => v - w0[i]!)
        }
        params = r.params
        o = r.opt
        st = r.state
      }
      return { losses, indices, encoderDelta }
    },
    dispose: () => step.dispose(),
  }
}
