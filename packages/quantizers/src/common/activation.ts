import * as t from 'io-ts'
import type { Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'

/** A traceable elementwise function of one tensor: the reference's `nn.Module` activations, as pure functions. */
export type Activation = (x: Tensor) => Tensor

/** Activations a config may name, so a JSON config (a golden case, a checkpoint's metadata) can choose one. */
export const NAMED_ACTIVATIONS: Readonly<Record<string, Activation>> = {
  identity: (x) => x,
  tanh: (x) => x.tanh(),
  sigmoid: (x) => x.sigmoid(),
  relu: (x) => x.relu(),
}

/** A user-supplied function (checked to be one; what it computes is the caller's). */
export const ActivationFn = new t.Type<Activation, Activation, unknown>(
  'Activation',
  (u): u is Activation => typeof u === 'function',
  (u, c) => (typeof u === 'function' ? t.success(u as Activation) : t.failure(u, c)),
  t.identity,
)

/** A function, a name from NAMED_ACTIVATIONS, or null (the identity). */
export const ActivationOption = t.union([ActivationFn, t.keyof(Object.fromEntries(Object.keys(NAMED_ACTIVATIONS).map((k) => [k, null])) as Record<string, null>), t.null])
export type ActivationOption = Activation | string | null

/**
 * The function an option names, applied with a shape check: a function that changes the shape
 * would break the straight-through identity silently, so it is a shape error naming the option.
 */
export function applyActivation(option: ActivationOption, x: Tensor, where: string): Tensor {
  if (option === null) return x
  const f = typeof option === 'function' ? option : NAMED_ACTIVATIONS[option]!
  const y = f(x)
  if (y.shape.length !== x.shape.length || y.shape.some((d, i) => d !== x.shape[i]) || y.dtype !== x.dtype)
    throw new TesseraError('shape', where, `the function must keep shape and dtype: got ${y.dtype}[${y.shape.join(',')}] for ${x.dtype}[${x.shape.join(',')}]`)
  return y
}
