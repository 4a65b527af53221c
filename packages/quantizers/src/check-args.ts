import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor } from '@tessera/core'
import { TesseraError, checkHostTensor, describeValue, fmtAval, shapeEq } from '@tessera/core'
import type { Named } from './quantizer.js'

/**
 * Argument checks shared by the host helpers (`applyOnHost`, `indicesToCodesOnHost`) and
 * `splitStateDict`: each record of named host tensors is checked against the quantizer's specs
 * before anything is traced, so a bad entry is a Left naming it instead of a shape error deep in
 * the program. Names are looked up with own-property tests (`Object.hasOwn`), so names such as
 * `constructor` or `toString` are unknown rather than found on `Object.prototype`.
 */

export interface NamedCheck {
  /** What the record is called in messages: `params` or `state`. */
  readonly what: string
  /** Whether every spec entry must be present (false: entries may be missing, present ones are checked). */
  readonly complete: boolean
}

const isPlainRecord = (x: unknown): x is Record<string, unknown> =>
  typeof x === 'object' && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x) &&
  (Object.getPrototypeOf(x) === Object.prototype || Object.getPrototypeOf(x) === null)

/** One entry against its spec: a host tensor of exactly the spec's shape and dtype. */
export function checkEntry(t: unknown, spec: Aval, label: string, kind: string, where: string): E.Either<TesseraError, HostTensor> {
  const ok = checkHostTensor(t, label, where)
  if (E.isLeft(ok)) return ok
  const h = ok.right
  if (h.dtype !== spec.dtype || !shapeEq(h.shape, spec.shape))
    return E.left(new TesseraError('input', where, `${label} is ${fmtAval(h)}; ${kind} expects ${fmtAval(spec)}`))
  return E.right(h)
}

/**
 * A record of named host tensors against specs: a plain object, no unknown names, every spec
 * entry present (when `complete`) with the spec's shape and dtype. Returns the entries in spec
 * order, so the traced program does not depend on the caller's key order.
 */
export function checkNamed(rec: unknown, specs: Named<Aval>, kind: string, where: string, opts: NamedCheck): E.Either<TesseraError, Named<HostTensor>> {
  if (!isPlainRecord(rec))
    return E.left(new TesseraError('input', where, `${opts.what} must be a plain object of named host tensors, got ${describeValue(rec)}`))
  for (const name of Object.keys(rec))
    if (!Object.hasOwn(specs, name))
      return E.left(new TesseraError('input', where, `${opts.what} has an unknown entry ${JSON.stringify(name)} (${kind} has ${Object.keys(specs).join(', ') || 'none'})`))
  if (opts.complete) {
    const missing = Object.keys(specs).filter((k) => !Object.hasOwn(rec, k))
    if (missing.length > 0) return E.left(new TesseraError('input', where, `missing parameter/state entries: ${missing.join(', ')} (in ${opts.what})`))
  }
  const out: Record<string, HostTensor> = {}
  for (const [name, spec] of Object.entries(specs)) {
    if (!Object.hasOwn(rec, name)) continue
    const t = checkEntry(rec[name], spec, `${opts.what} entry ${name}`, kind, where)
    if (E.isLeft(t)) return t
    out[name] = t.right
  }
  return E.right(out)
}
