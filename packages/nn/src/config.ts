import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import { TesseraError } from '@tessera/core'

/** A finite number (io-ts's t.number lets NaN and Infinity through). */
export const Finite = t.refinement(t.number, Number.isFinite, 'Finite')
export const NonNegative = t.refinement(t.number, (n) => Number.isFinite(n) && n >= 0, 'NonNegative')
export const Positive = t.refinement(t.number, (n) => Number.isFinite(n) && n > 0, 'Positive')
/** [0, 1) */
export const Decay = t.refinement(t.number, (n) => n >= 0 && n < 1, 'Decay in [0, 1)')

/**
 * Decode `u` as `codec` with defaults filled in, rejecting unknown keys (a misspelt option
 * must not be ignored); the error names the config field.
 */
export function decodeConfig<P extends t.Props>(
  name: string,
  props: P,
  defaults: { readonly [K in keyof P]: t.TypeOf<P[K]> },
  u: unknown,
): E.Either<TesseraError, { readonly [K in keyof P]: t.TypeOf<P[K]> }> {
  if (u === undefined) u = {}
  if (typeof u !== 'object' || u === null || Array.isArray(u))
    return E.left(new TesseraError('config', name, `config must be an object, got ${JSON.stringify(u)}`))
  const unknown = Object.keys(u).filter((k) => !(k in props))
  if (unknown.length > 0)
    return E.left(new TesseraError('config', `${name}.${unknown[0]}`, `unknown option (known: ${Object.keys(props).join(', ')})`))
  const filled = { ...defaults, ...(u as object) }
  const r = t.type(props).decode(filled)
  if (E.isRight(r)) return E.right(r.right as { readonly [K in keyof P]: t.TypeOf<P[K]> })
  const err = r.left[0]!
  const path = err.context.map((c) => c.key).filter((k) => k !== '').join('.')
  const expected = err.context[err.context.length - 1]?.type.name ?? 'a valid value'
  return E.left(new TesseraError('config', `${name}.${path}`, `got ${JSON.stringify(err.value)}; expected ${expected}`))
}
