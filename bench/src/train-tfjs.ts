/**
 * The TRAIN workload in tfjs: the demo's VQ-VAE step (see train.ts) written with tfjs ops,
 * `tf.variableGrads` and `tf.train.adam`, from Tessera's initial parameters and batch.
 */
import type * as tfc from '@tensorflow/tfjs-core'
import { fsqConstants } from '@tessera/quantizers'
import type { TrainTrace } from './train-check.js'
import { TRACE_STEPS } from './train-check.js'
import { trainSetup } from './train.js'
import type { TF } from './workloads.js'

const LAYERS = ['encoder.0', 'encoder.1', 'decoder.0', 'decoder.1'] as const

export function tfjsTrainRunner(tf: TF, backend: 'cpu' | 'wasm', quick: boolean) {
  const setup = trainSetup(quick)
  const { shape, levels, tokenDim: d } = setup
  const b = shape.batch
  const c = fsqConstants({ levels, bound_hard_clamp: false })
  const consts = {
    shift: tf.tensor1d([...c.shift]),
    halfL: tf.tensor1d([...c.halfL]),
    offset: tf.tensor1d([...c.offset]),
    halfWidth: tf.tensor1d([...c.halfWidth]),
    basis: tf.tensor1d([...c.basis]),
  }
  const images = tf.tensor2d(setup.images.data as Float32Array, setup.images.shape as [number, number])
  // weights kept as (in, out), transposed once from torch's (out, in): every forward matmul is
  // x · W with no transpose flag, the form the wasm backend hands to XNNPACK
  const initial = LAYERS.map((l) => {
    const w = setup.params[`${l}.weight`]!, bias = setup.params[`${l}.bias`]!
    return {
      w: tf.tidy(() => tf.transpose(tf.tensor2d(w.data as Float32Array, w.shape as [number, number]))),
      b: tf.tensor1d(bias.data as Float32Array),
    }
  })
  const vars = initial.map((p, i) => ({ w: tf.variable(p.w, true, `train.${LAYERS[i]}.w`), b: tf.variable(p.b, true, `train.${LAYERS[i]}.b`) }))
  const varList = vars.flatMap((v) => [v.w, v.b])
  const newOptimizer = () => tf.train.adam(shape.lr, shape.beta1, shape.beta2, shape.eps)
  let optimizer = newOptimizer()

  // round with an identity gradient (the reference's round_ste); tf.round rounds half to even, as torch.round does
  const roundSte = tf.customGrad((x) => ({ value: tf.round(x as tfc.Tensor), gradFunc: (dy) => dy as tfc.Tensor }))
  /**
   * A linear layer whose gradients are plain matMuls of explicitly transposed operands
   * (dx = dy · Wᵀ, dW = xᵀ · dy): the wasm backend runs a matMul with a transpose flag outside
   * XNNPACK, several times slower.
   */
  const linear = tf.customGrad((x, w, bias, save) => {
    ;(save as tfc.GradSaveFunc)([x as tfc.Tensor, w as tfc.Tensor])
    return {
      value: tf.fused.matMul({ a: x as tfc.Tensor2D, b: w as tfc.Tensor2D, bias: bias as tfc.Tensor }),
      gradFunc: (dy, [xs, ws]) => [
        tf.matMul(dy as tfc.Tensor, tf.transpose(ws!)),
        tf.matMul(tf.transpose(xs!), dy as tfc.Tensor),
        tf.sum(dy as tfc.Tensor, 0),
      ],
    }
  })

  /** The first layer: the batch is a constant (transposed once for dW), and no gradient is computed for it. */
  const imagesT = tf.transpose(images)
  const linearFirst = tf.customGrad((w, bias) => ({
    value: tf.fused.matMul({ a: images, b: w as tfc.Tensor2D, bias: bias as tfc.Tensor }),
    gradFunc: (dy) => [tf.matMul(imagesT, dy as tfc.Tensor), tf.sum(dy as tfc.Tensor, 0)],
  }))

  let indices: tfc.Tensor | undefined
  const loss = (): tfc.Scalar => {
    const [e0, e1, d0, d1] = vars as [(typeof vars)[0], (typeof vars)[0], (typeof vars)[0], (typeof vars)[0]]
    const z = tf.reshape(linear(tf.relu(linearFirst(e0.w, e0.b)), e1.w, e1.b), [b, shape.tokens, d])
    const bounded = tf.sub(tf.mul(tf.tanh(tf.add(z, consts.shift)), consts.halfL), consts.offset)
    const codes = tf.div(roundSte(bounded), consts.halfWidth)
    // the step's FSQ indices, as Tessera's step returns them (no gradient flows through them)
    indices = tf.keep(tf.cast(tf.round(tf.sum(tf.mul(tf.add(tf.mul(codes, consts.halfWidth), consts.halfWidth), consts.basis), -1)), 'int32'))
    const recon = linear(tf.relu(linear(tf.reshape(codes, [b, shape.tokens * d]), d0.w, d0.b)), d1.w, d1.b)
    // FSQ has no auxiliary loss: the loss is the reconstruction MSE
    return tf.mean(tf.square(tf.sub(recon, images)))
  }

  /** One step: loss, gradients, Adam update; returns the loss (= MSE) read back to the host. */
  const step = async (): Promise<{ loss: number; indices: Int32Array }> => {
    const { value, grads } = tf.variableGrads(loss, varList)
    optimizer.applyGradients(grads as unknown as Parameters<typeof optimizer.applyGradients>[0])
    Object.values(grads).forEach((g) => g.dispose())
    const [l, idx] = await Promise.all([value.data(), indices!.data()])
    value.dispose()
    indices!.dispose()
    return { loss: l[0]!, indices: idx as Int32Array }
  }
  const reset = () => {
    vars.forEach((v, i) => (v.w.assign(initial[i]!.w), v.b.assign(initial[i]!.b)))
    optimizer.dispose()
    optimizer = newOptimizer()
  }

  return {
    config: `tf.variableGrads + tf.train.adam(lr ${shape.lr}, β ${shape.beta1}/${shape.beta2}, ε ${shape.eps}); weights held as (in, out); linear layers: fused matMul + bias forward, gradients as plain matMuls of transposed copies (none for the batch); FSQ rounding by tf.customGrad (identity gradient); each timed call is a real step (variables updated in place)`,
    run: async () => {
      const r = await step()
      return [Float32Array.of(r.loss), Float32Array.of(r.loss)]
    },
    firstSteps: async (): Promise<TrainTrace> => {
      reset()
      const losses: number[] = []
      let first: Int32Array = new Int32Array(0)
      let encoderDelta = new Float32Array(0)
      for (let t = 0; t < TRACE_STEPS; t++) {
        const r = await step()
        losses.push(r.loss)
        if (t === 0) {
          first = r.indices
          // back to torch's (out, in) order, to compare with the reference element by element
          const [t1, t0] = [tf.transpose(vars[0]!.w), tf.transpose(initial[0]!.w)]
          const [w1, w0] = await Promise.all([t1.data(), t0.data()])
          t1.dispose()
          t0.dispose()
          encoderDelta = Float32Array.from(w1, (v, i) => v - w0[i]!)
        }
      }
      return { losses, indices: first, encoderDelta }
    },
    dispose: () => {
      optimizer.dispose()
      varList.forEach((v) => v.dispose())
      initial.forEach((p) => (p.w.dispose(), p.b.dispose()))
      Object.values(consts).forEach((t) => t.dispose())
      images.dispose()
      imagesT.dispose()
    },
  }
}
