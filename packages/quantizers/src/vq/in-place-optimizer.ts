import * as t from 'io-ts'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, prefixed, scoped } from '@tessera/core'
import type { Named } from '../quantizer.js'

/**
 * The reference's `in_place_codebook_optimizer`: an optimizer over the codebook's parameters (the
 * learnable codebook and a bridge's parameters) that steps inside the forward, on the gradient of
 * mse(quantized, input) of that forward. In Tessera it is a pure optimizer (the shape of
 * `@tessera/nn`'s `Optimizer`: `sgd(...)`, `adam(...)`, ... fit as they are) given in the config,
 * since the quantizer's state holds the optimizer's state under `in_place_codebook_optimizer.`.
 * Typed structurally so this package needs no dependency on `@tessera/nn`.
 */
export interface InPlaceOptimizer {
  readonly kind: string
  init(params: Named<HostTensor>): Record<string, HostTensor>
  stateSpecs(params: Named<Aval>): Record<string, Aval>
  update(params: Named<Tensor>, grads: Named<Tensor>, state: Named<Tensor>, lr?: Tensor): { params: Record<string, Tensor>; state: Record<string, Tensor> }
}

const isOptimizer = (u: unknown): u is InPlaceOptimizer =>
  typeof u === 'object' && u !== null && typeof (u as InPlaceOptimizer).update === 'function' &&
  typeof (u as InPlaceOptimizer).init === 'function' && typeof (u as InPlaceOptimizer).stateSpecs === 'function'

export const InPlaceOptimizerCodec = new t.Type<InPlaceOptimizer, InPlaceOptimizer, unknown>(
  'InPlaceOptimizer (an optimizer such as @tessera/nn sgd(...): init, stateSpecs, update)',
  isOptimizer,
  (u, c) => (isOptimizer(u) ? t.success(u) : t.failure(u, c)),
  (a) => a,
)

/**
 * Where the optimizer's state lives in the quantizer's state. torch keeps optimizer state out of a
 * module's `state_dict`, so a checkpoint of the reference has none: loading one starts it fresh.
 */
export const OPTIMIZER_PREFIX = 'in_place_codebook_optimizer.'

export const optimizerSpecs = (opt: InPlaceOptimizer, params: Named<Aval>): Record<string, Aval> => prefixed(opt.stateSpecs(params), OPTIMIZER_PREFIX)

export const optimizerInit = (opt: InPlaceOptimizer, params: Named<HostTensor>): Record<string, HostTensor> => prefixed(opt.init(params), OPTIMIZER_PREFIX)

/** The optimizer's own state, read out of the quantizer's (every entry it declared must be there). */
export function optimizerState(state: Named<Tensor>, specs: Named<Aval>, where: string): Record<string, Tensor> {
  for (const name of Object.keys(specs))
    if (!state[name]) throw new TesseraError('input', where, `missing state entry ${name} (in_place_codebook_optimizer)`)
  return scoped(state, OPTIMIZER_PREFIX)
}

/**
 * One optimizer step on `params` with `grads`: the new parameters (for the caller to adopt) and the
 * new optimizer state under its prefix. The new values are held constant for autodiff; a later use
 * of a parameter reads it through `asLeaf`, so gradients reach the parameter as torch's do.
 */
export function optimizerStep(opt: InPlaceOptimizer, params: Named<Tensor>, grads: Named<Tensor>, state: Named<Tensor>): { params: Record<string, Tensor>; state: Record<string, Tensor> } {
  const sg = (r: Named<Tensor>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.stopGradient()]))
  const next = opt.update(sg(params), sg(grads), sg(state))
  return { params: sg(next.params), state: prefixed(sg(next.state), OPTIMIZER_PREFIX) }
}

/**
 * `value` (a parameter's new data) with the gradient of `param`: torch writes a parameter's data in
 * place, so later uses see the new value while gradients still accumulate on the parameter. Exact:
 * sg(value) + (p − sg(p)) adds a zero.
 */
export const asLeaf = (param: Tensor, value: Tensor): Tensor => value.stopGradient().add(param.sub(param.stopGradient()))

/**
 * `update_in_place_optimizer` for `manual_in_place_optimizer_update`: one step of the optimizer on
 * the codebook's parameters with the caller's gradients (the forward's `inPlaceGrads`, plus whatever
 * else the reference would have accumulated in their `.grad`), reading and writing its state in the
 * quantizer's state. Returns the stepped parameters and the whole new state.
 */
export function manualOptimizerUpdate(
  opt: InPlaceOptimizer,
  specs: Named<Aval>,
  params: Named<Tensor>,
  state: Named<Tensor>,
  grads: Named<Tensor>,
  where: string,
): { params: Record<string, Tensor>; state: Record<string, Tensor> } {
  for (const k of Object.keys(params))
    if (!grads[k]) throw new TesseraError('input', where, `no gradient for the codebook parameter ${k}`)
  const stepped = optimizerStep(opt, params, grads, optimizerState(state, specs, where))
  return { params: stepped.params, state: { ...state, ...stepped.state } }
}
