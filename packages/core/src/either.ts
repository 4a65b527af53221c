/**
 * The few Either helpers a user of Tessera's `Either`-returning functions needs, exported from
 * core so that using Tessera does not mean adding fp-ts as a direct dependency (with pnpm, a
 * transitive fp-ts cannot be imported).
 */
import * as E from 'fp-ts/lib/Either.js'

export type { Either, Left, Right } from 'fp-ts/lib/Either.js'

/** True when `e` holds an error (a `Left`); narrows `e` so `e.left` is typed. */
export const isLeft: <L, R>(e: E.Either<L, R>) => e is E.Left<L> = E.isLeft

/** True when `e` holds a value (a `Right`); narrows `e` so `e.right` is typed. */
export const isRight: <L, R>(e: E.Either<L, R>) => e is E.Right<R> = E.isRight

/** The value of a `Right`; throws the `Left` (wrapped in an Error when it is not one). */
export function getOrThrow<L, R>(e: E.Either<L, R>): R {
  if (E.isRight(e)) return e.right
  throw e.left instanceof Error ? e.left : new Error(String(e.left))
}
