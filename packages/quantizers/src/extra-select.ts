import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { TesseraError, describeValue } from '@tessera/core'
import type { Named } from './quantizer.js'

/**
 * The `extra` argument of `applyOnHost` and `applyOnRank`: which entries of a result's `extra` to
 * return. The traced program then has no output for the others, so what only they read is never
 * computed; VectorQuantize's `codebook_dist` (a float32 distance per token and code) is the one
 * that matters, since without it a backend may find the nearest code without storing distances.
 */
export type ExtraSelection = readonly string[]

/** Checks `extra` as given (undefined: every entry); the Left names the argument. */
export function checkExtraSelection(value: unknown, where: string): E.Either<TesseraError, ExtraSelection | undefined> {
  if (value === undefined) return E.right(undefined)
  if (!Array.isArray(value) || value.some((n) => typeof n !== 'string'))
    return E.left(new TesseraError('input', where, `extra must be an array of the names of extra entries to return (as in a result's extra), got ${describeValue(value)}`))
  const repeated = value.find((n, i) => value.indexOf(n) !== i)
  if (repeated !== undefined) return E.left(new TesseraError('input', where, `extra names ${JSON.stringify(repeated)} twice`))
  return E.right(value as string[])
}

/**
 * The entries of a traced call's `extra` that `names` selects, in the call's own order; throws
 * (tracing answers a Left) for a name the call does not return.
 */
export function selectExtra(extra: Named<Tensor> | undefined, names: ExtraSelection | undefined, where: string): Named<Tensor> {
  const all = extra ?? {}
  if (names === undefined) return { ...all }
  const missing = names.find((n) => !Object.hasOwn(all, n))
  if (missing !== undefined) {
    const has = Object.keys(all)
    throw new TesseraError('input', where, `extra names ${JSON.stringify(missing)}, which this call does not return (its extra entries: ${has.length > 0 ? has.join(', ') : 'none'})`)
  }
  return Object.fromEntries(Object.entries(all).filter(([n]) => names.includes(n)))
}
