import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor } from '@tessera/core'
import { TesseraError, describeValue, fmtAval, hostTensor, sizeOf } from '@tessera/core'
import { checkEntry } from '../check-args.js'
import type { Init, Named, Quantizer } from '../quantizer.js'

/**
 * State dicts: flat records from the reference's names to host tensors. This module reads them
 * from the golden JSON tensor format ({shape, dtype, data}), writes them back, and splits a flat
 * record into a quantizer's params and state.
 */

/** Largest magnitude an int64 index may have to be carried as an exact int32. */
const INT32_MAX = 2147483647

export interface JsonTensor {
  readonly shape: readonly number[]
  readonly dtype: string
  readonly data: readonly (number | boolean)[]
}

/**
 * One golden JSON tensor -> HostTensor. float32 values are the exact decimals of float32s, so
 * Float32Array stores them losslessly; int64 is narrowed to int32 with a range check.
 */
export function tensorFromJson(name: string, j: unknown): E.Either<TesseraError, HostTensor> {
  const where = `state-dict[${name}]`
  if (typeof j !== 'object' || j === null) return E.left(new TesseraError('input', where, 'tensor must be an object {shape, dtype, data}'))
  const { shape, dtype, data } = j as Partial<JsonTensor>
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0))
    return E.left(new TesseraError('input', where, `shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`))
  if (!Array.isArray(data)) return E.left(new TesseraError('input', where, 'data must be a flat array'))
  if (data.length !== sizeOf(shape))
    return E.left(new TesseraError('input', where, `data has ${data.length} elements but shape [${shape.join(',')}] needs ${sizeOf(shape)}`))
  switch (dtype) {
    case 'float32':
      if (data.some((v) => typeof v !== 'number')) return E.left(new TesseraError('input', where, 'float32 data must be numbers'))
      return hostTensor(Float32Array.from(data as number[]), shape, 'float32')
    case 'int32':
    case 'int64': {
      for (let i = 0; i < data.length; i++) {
        const v = data[i]
        if (typeof v !== 'number' || !Number.isInteger(v))
          return E.left(new TesseraError('input', where, `${dtype} element ${i} = ${String(v)} is not an integer`))
        if (Math.abs(v) > INT32_MAX) return E.left(new TesseraError('input', where, `${dtype} element ${i} = ${v} does not fit in int32`))
      }
      return hostTensor(Int32Array.from(data as number[]), shape, 'int32')
    }
    case 'bool':
      return hostTensor(
        Uint8Array.from(data as (number | boolean)[], (v) => (v ? 1 : 0)),
        shape,
        'bool',
      )
    default:
      return E.left(new TesseraError('dtype', where, `unsupported dtype ${String(dtype)} (float32, int32, int64, bool)`))
  }
}

/** A golden case's `state` object -> flat record of host tensors. */
export function stateDictFromJson(obj: unknown): E.Either<TesseraError, Record<string, HostTensor>> {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj))
    return E.left(new TesseraError('input', 'state-dict', 'state must be an object of named tensors'))
  const out: Record<string, HostTensor> = {}
  for (const [k, v] of Object.entries(obj)) {
    const t = tensorFromJson(k, v)
    if (E.isLeft(t)) return t
    out[k] = t.right
  }
  return E.right(out)
}

/** HostTensor -> the golden JSON tensor format (bool as true/false, as the reference writes it). */
export function tensorToJson(t: HostTensor): JsonTensor {
  const data = t.dtype === 'bool' ? Array.from(t.data, (v) => v !== 0) : Array.from(t.data)
  return { shape: [...t.shape], dtype: t.dtype, data }
}

export function stateDictToJson(sd: Named<HostTensor>): Record<string, JsonTensor> {
  return Object.fromEntries(Object.entries(sd).map(([k, v]) => [k, tensorToJson(v)]))
}

export interface SplitOptions {
  /** Entries missing from the state dict are taken from here (e.g. a fresh `init`); without it a missing entry is an error. */
  readonly defaults?: Init
  /** Names in the state dict that are not parameters or state (derived views such as `codebooks`): skipped instead of refused. */
  readonly ignore?: readonly string[]
}

/**
 * Split a flat state dict into a quantizer's params and state by its specs, checking every shape
 * and dtype. Unknown names are refused (a typo or a different architecture) unless listed in `ignore`;
 * names are own-property lookups, so `constructor` or `toString` are unknown, never found on the prototype.
 */
export function splitStateDict(q: Pick<Quantizer, 'paramSpecs' | 'stateSpecs' | 'kind'>, sd: Named<HostTensor>, opts: SplitOptions = {}): E.Either<TesseraError, Init> {
  if (typeof sd !== 'object' || sd === null || Array.isArray(sd))
    return E.left(new TesseraError('input', 'state-dict', `a state dict must be an object of named host tensors, got ${describeValue(sd)}`))
  const params: Record<string, HostTensor> = {}
  const state: Record<string, HostTensor> = {}
  const ignore = new Set(opts.ignore ?? [])
  for (const name of Object.keys(sd)) {
    if (ignore.has(name)) continue
    if (!Object.hasOwn(q.paramSpecs, name) && !Object.hasOwn(q.stateSpecs, name))
      return E.left(new TesseraError('input', `state-dict[${name}]`, `is not a parameter or buffer of ${q.kind}`))
  }
  const fill = (specs: Named<Aval>, into: Record<string, HostTensor>, fallback: Named<HostTensor> | undefined) => {
    for (const [name, spec] of Object.entries(specs)) {
      const t = Object.hasOwn(sd, name) ? sd[name] : fallback && Object.hasOwn(fallback, name) ? fallback[name] : undefined
      if (!t) return E.left(new TesseraError('input', `state-dict[${name}]`, `missing (${q.kind} needs ${fmtAval(spec)})`))
      const ok = checkEntry(t, spec, 'the entry', q.kind, `state-dict[${name}]`)
      if (E.isLeft(ok)) return ok
      into[name] = ok.right
    }
    return E.right(undefined)
  }
  const a = fill(q.paramSpecs, params, opts.defaults?.params)
  if (E.isLeft(a)) return a
  const b = fill(q.stateSpecs, state, opts.defaults?.state)
  if (E.isLeft(b)) return b
  return E.right({ params, state })
}

/** params and state merged back into one flat state dict (the reference's `state_dict()`). */
export function joinStateDict(init: Init): Record<string, HostTensor> {
  return { ...init.params, ...init.state }
}
