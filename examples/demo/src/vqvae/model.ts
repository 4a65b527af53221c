import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random } from '@tessera/core'
import type { Named } from '@tessera/nn'
import { mlp, prefixed, scoped } from '@tessera/nn'
import type { QuantizerChoice } from './choices.js'
import { IMAGE_SIZE } from './digits.js'

/**
 * A small VQ-VAE on flattened 28x28 digits: an MLP encoder to `tokens` latent vectors of the
 * quantizer's width, the quantizer, and an MLP decoder back to pixels (through a sigmoid, so
 * reconstructions stay in [0, 1]). Parameters are one flat record: `encoder.*`, `decoder.*`
 * and `quantizer.*` (the quantizer's own names); the quantizer's state is a second record.
 */
export interface VqVaeShape {
  readonly tokens: number
  readonly hidden: number
  /** The decoder's last activation: linear output trains faster on MSE; sigmoid keeps [0, 1]. */
  readonly output?: 'linear' | 'sigmoid'
}

export interface ForwardResult {
  readonly recon: Tensor
  /** (b, tokens, codebooks) int32 */
  readonly indices: Tensor
  readonly quantizerLoss: Tensor
  readonly state: Named<Tensor>
}

export interface VqVae {
  readonly shape: VqVaeShape
  readonly choice: QuantizerChoice
  paramSpecs(): Record<string, Aval>
  stateSpecs(): Record<string, Aval>
  init(key: random.Key): { params: Record<string, HostTensor>; state: Record<string, HostTensor> }
  forward(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: { training: boolean; key?: Tensor }): ForwardResult
}

export function makeVqVae(choice: QuantizerChoice, shape: VqVaeShape): VqVae {
  const latent = shape.tokens * choice.tokenDim
  const encoder = mlp([IMAGE_SIZE, shape.hidden, latent], 'relu')
  const decoder = mlp([latent, shape.hidden, IMAGE_SIZE], 'relu')
  const q = choice.quantizer
  return {
    shape,
    choice,
    paramSpecs: () => ({ ...prefixed(encoder.specs(), 'encoder.'), ...prefixed(decoder.specs(), 'decoder.'), ...prefixed(q.paramSpecs, 'quantizer.') }),
    stateSpecs: () => ({ ...q.stateSpecs }),
    init(key) {
      const [ke, kd, kq] = random.splitKey(key, 3) as [random.Key, random.Key, random.Key]
      const qi = q.init(kq)
      return {
        params: { ...prefixed(encoder.init(ke), 'encoder.'), ...prefixed(decoder.init(kd), 'decoder.'), ...prefixed(qi.params, 'quantizer.') },
        state: { ...qi.state },
      }
    },
    forward(params, state, x, opts) {
      if (x.rank !== 2 || x.shape[1] !== IMAGE_SIZE)
        throw new TesseraError('shape', 'VqVae.forward', `images must be (b, ${IMAGE_SIZE}), got [${x.shape.join(',')}]`)
      const b = x.shape[0]!
      const z = encoder.apply(scoped(params, 'encoder.'), x).reshape([b, shape.tokens, choice.tokenDim])
      const r = q.apply(scoped(params, 'quantizer.'), state, z, opts.key ? { training: opts.training, key: opts.key } : { training: opts.training })
      const out = decoder.apply(scoped(params, 'decoder.'), r.quantized.reshape([b, latent]))
      const recon = shape.output === 'sigmoid' ? out.sigmoid() : out
      return {
        recon,
        indices: r.indices.reshape([b, shape.tokens, choice.codebooks]),
        quantizerLoss: r.loss,
        state: r.state,
      }
    },
  }
}
