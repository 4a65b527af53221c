import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Aval, HostTensor, Named, Tensor } from '@tessera/core'
import { TesseraError, tensorOf, where, zerosHost } from '@tessera/core'
import { Decay, NonNegative, Positive, decodeConfig } from './config.js'

/**
 * Optimizers as pure, traceable functions over flat parameter records: `update` takes the
 * parameters, their gradients and the optimizer state as symbolic tensors and returns the new
 * parameters and state, so a whole training step (forward, backward, update) is one program.
 * State is a flat record too: `${param}.${slot}` per parameter plus a scalar `step` count.
 */
export interface Optimizer<C> {
  readonly kind: string
  readonly config: C
  /** Initial state (zeros, step 0) for parameters of these shapes. */
  init(params: Named<HostTensor>): Record<string, HostTensor>
  stateSpecs(params: Named<Aval>): Record<string, Aval>
  /**
   * One step. `lr`, when given, is a scalar f32[] tensor that replaces the configured learning
   * rate (a schedule computed on the host and fed to the compiled step as an input).
   */
  update(
    params: Named<Tensor>,
    grads: Named<Tensor>,
    state: Named<Tensor>,
    lr?: Tensor,
  ): { params: Record<string, Tensor>; state: Record<string, Tensor> }
}

function learningRate(kind: string, step: Tensor, configured: number, lr: Tensor | undefined): Tensor {
  if (!lr) return step.builder.scalar(configured)
  if (lr.dtype !== 'float32' || lr.rank !== 0)
    throw new TesseraError('shape', `${kind}.lr`, `a learning-rate tensor must be a scalar f32[], got ${lr.dtype}[${lr.shape.join(',')}]`)
  return lr
}

function checkGrads(kind: string, params: Named<Tensor>, grads: Named<Tensor>) {
  for (const k of Object.keys(params)) {
    const g = grads[k]
    if (!g) throw new TesseraError('input', kind, `no gradient for parameter ${k}`)
    if (g.shape.join(',') !== params[k]!.shape.join(','))
      throw new TesseraError('shape', kind, `gradient of ${k} is [${g.shape.join(',')}]; the parameter is [${params[k]!.shape.join(',')}]`)
  }
}

function slots(names: readonly string[]) {
  return {
    init(params: Named<HostTensor>) {
      const s: Record<string, HostTensor> = { step: tensorOf([0], []) }
      for (const [k, p] of Object.entries(params)) for (const n of names) s[`${k}.${n}`] = zerosHost(p.shape, 'float32')
      return s
    },
    stateSpecs(params: Named<Aval>) {
      const s: Record<string, Aval> = { step: { shape: [], dtype: 'float32' } }
      for (const [k, p] of Object.entries(params)) for (const n of names) s[`${k}.${n}`] = { shape: p.shape, dtype: 'float32' }
      return s
    },
  }
}

function slot(state: Named<Tensor>, key: string): Tensor {
  const s = state[key]
  if (!s) throw new TesseraError('input', 'optimizer', `state has no entry ${key}`)
  return s
}

// ---- SGD ----

const sgdProps = { lr: Positive, momentum: NonNegative, dampening: NonNegative, nesterov: t.boolean, weight_decay: NonNegative }
export type SgdConfig = { readonly [K in keyof typeof sgdProps]: t.TypeOf<(typeof sgdProps)[K]> }

/** torch.optim.SGD (momentum buffer starts as the first gradient, as torch does). */
export function sgd(config: unknown): E.Either<TesseraError, Optimizer<SgdConfig>> {
  const decoded = decodeConfig('sgd', sgdProps, { lr: 0.01, momentum: 0, dampening: 0, nesterov: false, weight_decay: 0 }, config)
  if (E.isLeft(decoded)) return decoded
  const c: SgdConfig = decoded.right
  {
    const s = slots(c.momentum > 0 ? ['momentum_buffer'] : [])
    return E.right({
      kind: 'sgd',
      config: c,
      ...s,
      update(params, grads, state, lrIn) {
        checkGrads('sgd', params, grads)
        const step = slot(state, 'step')
        const lr = learningRate('sgd', step, c.lr, lrIn)
        const outP: Record<string, Tensor> = {}
        const outS: Record<string, Tensor> = { step: step.add(1) }
        for (const [k, p] of Object.entries(params)) {
          let g = grads[k]!
          if (c.weight_decay > 0) g = g.add(p.mul(c.weight_decay))
          if (c.momentum > 0) {
            const buf0 = slot(state, `${k}.momentum_buffer`)
            const newBuf = where(step.eq(0), g, buf0.mul(c.momentum).add(g.mul(1 - c.dampening)))
            outS[`${k}.momentum_buffer`] = newBuf
            g = c.nesterov ? g.add(newBuf.mul(c.momentum)) : newBuf
          }
          outP[k] = p.sub(g.mul(lr))
        }
        return { params: outP, state: outS }
      },
    })
  }
}

// ---- Adam / AdamW ----

const adamProps = { lr: Positive, beta1: Decay, beta2: Decay, eps: Positive, weight_decay: NonNegative }
export type AdamConfig = { readonly [K in keyof typeof adamProps]: t.TypeOf<(typeof adamProps)[K]> }

function adamFamily(kind: 'adam' | 'adamw', decoupled: boolean, defaults: AdamConfig, config: unknown): E.Either<TesseraError, Optimizer<AdamConfig>> {
  const decoded = decodeConfig(kind, adamProps, defaults, config)
  if (E.isLeft(decoded)) return decoded
  const c: AdamConfig = decoded.right
  return E.right({
    kind,
    config: c,
    ...slots(['exp_avg', 'exp_avg_sq']),
    update(params, grads, state, lrIn) {
      checkGrads(kind, params, grads)
      const step = slot(state, 'step')
      const lr = learningRate(kind, step, c.lr, lrIn)
      const t1 = step.add(1)
      const bl = t1.builder
      // bias corrections 1 - beta^t, computed in the program from the step count
      const bc1 = bl.scalar(c.beta1).pow(t1).rsub(1)
      const bc2 = bl.scalar(c.beta2).pow(t1).rsub(1)
      const stepSize = lr.div(bc1)
      const bc2Sqrt = bc2.sqrt()
      const outP: Record<string, Tensor> = {}
      const outS: Record<string, Tensor> = { step: t1 }
      for (const [k, p0] of Object.entries(params)) {
        let g = grads[k]!
        let p = p0
        if (c.weight_decay > 0) {
          if (decoupled) p = p.mul(lr.mul(c.weight_decay).rsub(1))
          else g = g.add(p.mul(c.weight_decay))
        }
        const m = slot(state, `${k}.exp_avg`).mul(c.beta1).add(g.mul(1 - c.beta1))
        const v = slot(state, `${k}.exp_avg_sq`).mul(c.beta2).add(g.mul(g).mul(1 - c.beta2))
        const denom = v.sqrt().div(bc2Sqrt).add(c.eps)
        outP[k] = p.sub(m.div(denom).mul(stepSize))
        outS[`${k}.exp_avg`] = m
        outS[`${k}.exp_avg_sq`] = v
      }
      return { params: outP, state: outS }
    },
  })
}

/** torch.optim.Adam (weight_decay adds an L2 term to the gradient). */
export function adam(config: unknown): E.Either<TesseraError, Optimizer<AdamConfig>> {
  return adamFamily('adam', false, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0 }, config)
}

/** torch.optim.AdamW (decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step). */
export function adamw(config: unknown): E.Either<TesseraError, Optimizer<AdamConfig>> {
  return adamFamily('adamw', true, { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 }, config)
}
