import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import { TesseraError } from '@tessera/core'

/**
 * Config codecs. Field names are the reference's keyword arguments (snake_case), so a golden case's
 * constructor kwargs decode as they are and a Python user recognises every option.
 */

export interface PositiveIntBrand {
  readonly PositiveInt: unique symbol
}
export const PositiveInt = t.brand(t.number, (n): n is t.Branded<number, PositiveIntBrand> => Number.isInteger(n) && n > 0, 'PositiveInt')
export type PositiveInt = t.TypeOf<typeof PositiveInt>

export interface NonNegIntBrand {
  readonly NonNegInt: unique symbol
}
export const NonNegInt = t.brand(t.number, (n): n is t.Branded<number, NonNegIntBrand> => Number.isInteger(n) && n >= 0, 'NonNegInt')

/** A finite float (io-ts's t.number lets NaN and Infinity through). */
export interface FiniteBrand {
  readonly Finite: unique symbol
}
export const Finite = t.brand(t.number, (n): n is t.Branded<number, FiniteBrand> => Number.isFinite(n), 'Finite')

export interface UnitIntervalBrand {
  readonly UnitInterval: unique symbol
}
/** (0, 1] */
export const FractionOpen0 = t.brand(t.number, (n): n is t.Branded<number, UnitIntervalBrand> => n > 0 && n <= 1, 'UnitInterval')

export interface ProbabilityBrand {
  readonly Probability: unique symbol
}
/** [0, 1) */
export const Probability = t.brand(t.number, (n): n is t.Branded<number, ProbabilityBrand> => n >= 0 && n < 1, 'Probability')

/**
 * An exact record: required and optional props, and any key outside them is an error (io-ts's
 * `exact` would strip unknown keys silently, and a misspelt option would then be ignored).
 */
export function strict<R extends t.Props, O extends t.Props>(name: string, required: R, optional: O) {
  const base = t.intersection([t.type(required), t.partial(optional)])
  const known = new Set([...Object.keys(required), ...Object.keys(optional)])
  return new t.Type<t.TypeOf<typeof base>, t.OutputOf<typeof base>, unknown>(
    name,
    (u): u is t.TypeOf<typeof base> => base.is(u) && Object.keys(u as object).every((k) => known.has(k)),
    (u, c) => {
      if (typeof u === 'object' && u !== null && !Array.isArray(u)) {
        const unknown = Object.keys(u).filter((k) => !known.has(k))
        if (unknown.length > 0)
          return t.failure(u, [...c, { key: unknown[0]!, type: t.never, actual: (u as Record<string, unknown>)[unknown[0]!] }], `unknown key "${unknown[0]}" (known: ${[...known].join(', ')})`)
      }
      // present the intersection as the current type, so error paths skip its member indices
      const last = c[c.length - 1]
      return base.validate(u, last ? [...c.slice(0, -1), { ...last, type: base }] : c)
    },
    (a) => base.encode(a),
  )
}

/** A config value in a message: JSON, except that NaN and ±Infinity print as such (JSON says null). */
export function showValue(v: unknown): string {
  if (typeof v === 'number') return String(v)
  if (v === undefined) return 'undefined'
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : x)) ?? String(v)
  } catch {
    return String(v)
  }
}

function describe(err: t.ValidationError): { field: string; message: string } {
  // io-ts puts the member index of an intersection into the context: drop those, keep array indices
  let field = ''
  err.context.forEach((c, i) => {
    if (i === 0 || c.key === '') return
    const parent = err.context[i - 1]!.type as { _tag?: string }
    if (parent._tag === 'IntersectionType' || parent._tag === 'UnionType') return
    field = /^\d+$/.test(c.key) ? `${field}[${c.key}]` : field ? `${field}.${c.key}` : c.key
  })
  const last = err.context[err.context.length - 1]
  const expected = last?.type.name ?? 'value'
  const message = err.message ?? `expected ${expected}, got ${showValue(err.value)}`
  return { field: field || '(root)', message }
}

/** Decode a config; a failure is a TesseraError of kind 'config' whose `where` names the field. */
export function decode<A, O>(codec: t.Type<A, O, unknown>, input: unknown, where: string = codec.name): E.Either<TesseraError, A> {
  const r = codec.decode(input)
  if (E.isRight(r)) return E.right(r.right)
  const first = describe(r.left[0]!)
  return E.left(new TesseraError('config', `${where}.${first.field}`, first.message))
}

/** A rule between fields, checked after decoding: Left naming the field when it fails. */
/**
 * Decode options with an io-ts codec, then resolve them into a config (defaults, derived fields,
 * cross-field checks): every quantizer's `decodeX(input, where)` is this with its own codec and resolver.
 */
export function decodeWith<A, O, C>(codec: t.Type<A, O, unknown>, input: unknown, where: string, resolve: (o: A) => E.Either<TesseraError, C>): E.Either<TesseraError, C> {
  return E.chain(resolve)(decode(codec, input, where))
}

export function check(ok: boolean, where: string, field: string, message: string): E.Either<TesseraError, void> {
  return ok ? E.right(undefined) : E.left(new TesseraError('config', `${where}.${field}`, message))
}

/** The first failing rule, or Right(value). */
export function checks<A>(value: A, rules: readonly (() => E.Either<TesseraError, void>)[]): E.Either<TesseraError, A> {
  for (const r of rules) {
    const res = r()
    if (E.isLeft(res)) return res
  }
  return E.right(value)
}

/**
 * The largest codebook any quantizer accepts: indices must be exact in float32 arithmetic (they
 * are summed and compared as floats in places, as in the reference), i.e. at most 2^24.
 */
export const MAX_CODEBOOK_SIZE = 2 ** 24

export const isPow2 = (n: number) => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
