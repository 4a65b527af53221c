/**
 * Every error Tessera raises on purpose is a TesseraError with a kind and the op (or config
 * field) it concerns, so a boundary can turn it into a `Left` and a user can read what went wrong.
 */
export type ErrorKind = 'shape' | 'dtype' | 'param' | 'input' | 'config' | 'runtime' | 'backend' | 'numeric'

export class TesseraError extends Error {
  readonly kind: ErrorKind
  /** The primitive, function or config field the error is about. */
  readonly where: string
  constructor(kind: ErrorKind, where: string, message: string) {
    super(`${where}: ${message}`)
    this.name = `TesseraError(${kind})`
    this.kind = kind
    this.where = where
  }
}

export const shapeError = (op: string, msg: string) => new TesseraError('shape', op, msg)
export const dtypeError = (op: string, msg: string) => new TesseraError('dtype', op, msg)
export const paramError = (op: string, msg: string) => new TesseraError('param', op, msg)

/**
 * Wrap anything thrown into a TesseraError so boundaries always return one kind of Left; `kind`
 * is what a non-Tessera error is taken for (a backend's boundary says 'backend').
 */
export function asTesseraError(e: unknown, where: string, kind: ErrorKind = 'runtime'): TesseraError {
  if (e instanceof TesseraError) return e
  const msg = e instanceof Error ? e.message : String(e)
  return new TesseraError(kind, where, msg)
}
