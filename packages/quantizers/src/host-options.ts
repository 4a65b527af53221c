import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { TesseraError, checkHostTensor, describeValue, fmtAval } from '@tessera/core'
import { indexRangeOf } from './index-range.js'
import type { ApplyOptions, Quantizer } from './quantizer.js'

/**
 * A quantizer's per-call options on the host, derived from the type of its own `apply` so that a
 * new option of any quantizer reaches `applyOnHost` and `applyOnRank` without a list kept here.
 * `training`, `key` and `world` are not among them: the first two are arguments of those
 * functions themselves, and `applyOnRank` sets `world` from its collective (docs/DISTRIBUTED.md).
 */
export type CallOptionsOf<Q extends Quantizer> = Omit<Parameters<Q['apply']>[3], keyof ApplyOptions>

/**
 * An option's value on the host: every tensor becomes a host tensor (fed to the program as an
 * input); a function stays a function of traced tensors, since it is traced into the program.
 */
export type HostOption<T> = T extends Tensor
  ? HostTensor
  : T extends (...args: never[]) => unknown
    ? T
    : T extends object
      ? { readonly [K in keyof T]: HostOption<T[K]> }
      : T

/**
 * `applyOnHost`'s `options` for quantizer `Q`: its `apply` options with host tensors for tensors.
 * A quantizer without options of its own takes none (an empty object type would accept any).
 */
export type HostCallOptions<Q extends Quantizer> = [keyof CallOptionsOf<Q>] extends [never]
  ? { readonly [name: string]: never }
  : { readonly [K in keyof CallOptionsOf<Q>]?: HostOption<CallOptionsOf<Q>[K]> }

/** A checked option tree: tensor leaves are numbered program inputs, everything else is kept as given. */
type Node =
  | { readonly kind: 'tensor'; readonly index: number }
  | { readonly kind: 'value'; readonly value: unknown }
  | { readonly kind: 'record'; readonly entries: readonly (readonly [string, Node])[] }

export interface CheckedOptions {
  /** The option tensors, in the order the rebuilt options take them. */
  readonly tensors: readonly HostTensor[]
  /** The top-level option names given (undefined values left out). */
  readonly names: readonly string[]
  readonly tree: Node
}

const RESERVED: Readonly<Record<string, string>> = {
  training: 'training is an argument of applyOnHost (or applyOnRank) itself, not an option',
  key: 'key is an argument of applyOnHost (or applyOnRank) itself (an i32[2] host tensor), not an option',
  world: 'not an option: applyOnHost runs one process, and applyOnRank sets it from its collective (docs/DISTRIBUTED.md)',
}

const isPlainObject = (v: object): boolean => {
  const proto = Object.getPrototypeOf(v)
  return !Array.isArray(v) && !ArrayBuffer.isView(v) && (proto === Object.prototype || proto === null)
}

const looksLikeTensor = (v: object): boolean => Object.hasOwn(v, 'data') || Object.hasOwn(v, 'dtype') || Object.hasOwn(v, 'shape')

/**
 * Checks on an option tensor's values that no shape check can make: a bool option holds 0 or 1, a
 * float option (an EMA weight, accumulated statistics) must be finite, and `indices` (target codes, the reference's
 * name for them) must lie in the quantizer's index range. In a program either would become a NaN
 * or a gather out of range instead of an error naming the option. -1 is VectorQuantize's ignored
 * target (torch's ignore_index); where -1 marks a layer dropped by quantize dropout (ResidualVQ's
 * indices), the reference asserts that no target is -1, and so does this check.
 */
function checkValues(q: Quantizer, path: readonly string[], t: HostTensor, label: string, where: string): E.Either<TesseraError, void> {
  if (t.dtype === 'bool') {
    // a bool's storage is a Uint8Array: any other byte would read as true on some backends and not on others
    for (let j = 0; j < t.data.length; j++)
      if (t.data[j] !== 0 && t.data[j] !== 1)
        return E.left(new TesseraError('input', where, `${label} (${fmtAval(t)}) holds ${t.data[j]} at flat position ${j}; a bool tensor holds 0 or 1`))
  }
  if (t.dtype === 'float32') {
    for (let j = 0; j < t.data.length; j++)
      if (!Number.isFinite(t.data[j]!))
        return E.left(new TesseraError('input', where, `${label} (${fmtAval(t)}) is not finite at flat position ${j}: ${t.data[j]}; option tensors must be finite`))
  }
  if (path.length === 1 && path[0] === 'indices' && t.dtype === 'int32') {
    const range = indexRangeOf(q, t.shape.length)
    if (range === undefined) return E.right(undefined)
    const at = new Array<number>(t.shape.length).fill(0)
    const ignored = !range.dropped
    for (let j = 0; j < t.data.length; j++) {
      const v = t.data[j]!
      const size = range.size(at)
      if (size !== undefined && !(ignored && v === -1) && !(v >= 0 && v < size))
        return E.left(new TesseraError('input', where, `${label} (target codes, ${fmtAval(t)}): index ${v} at position [${at.join(',')}] (flat ${j}) is outside [0, ${size})${ignored ? ' and is not -1 (ignored)' : ` (-1 marks a dropped layer: ${q.kind}'s target codes must come from a call without quantize dropout, as the reference asserts)`}`))
      for (let a = t.shape.length - 1; a >= 0; a--) {
        if (++at[a]! < t.shape[a]!) break
        at[a] = 0
      }
    }
  }
  return E.right(undefined)
}

/**
 * Checks `options` as given to `applyOnHost`: a plain object whose values are host tensors,
 * finite numbers, booleans, strings, functions or plain records of those. Every Left names the
 * option (`options.emaAccum.clusterSize`) and what it got. Shapes and dtypes against the
 * quantizer's expectations are checked by the quantizer itself while tracing, before anything runs.
 */
export function checkHostOptions(q: Quantizer, options: unknown, where: string): E.Either<TesseraError, CheckedOptions> {
  if (options === undefined) return E.right({ tensors: [], names: [], tree: { kind: 'record', entries: [] } })
  if (typeof options !== 'object' || options === null || !isPlainObject(options))
    return E.left(new TesseraError('input', where, `options must be a plain object of ${q.kind}'s per-call options, got ${describeValue(options)}`))
  const tensors: HostTensor[] = []
  const go = (v: unknown, path: readonly string[]): E.Either<TesseraError, Node> => {
    const label = `options.${path.join('.')}`
    if (typeof v === 'function' || typeof v === 'boolean' || typeof v === 'string') return E.right({ kind: 'value', value: v })
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) return E.left(new TesseraError('input', where, `${label} must be a finite number, got ${v}`))
      return E.right({ kind: 'value', value: v })
    }
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v)) {
      if (looksLikeTensor(v) || !isPlainObject(v)) {
        const t = checkHostTensor(v, label, where)
        if (E.isLeft(t)) return t
        const ok = checkValues(q, path, t.right, label, where)
        if (E.isLeft(ok)) return ok
        tensors.push(t.right)
        return E.right({ kind: 'tensor', index: tensors.length - 1 })
      }
      if (path.length > 4) return E.left(new TesseraError('input', where, `${label} nests too deeply for a per-call option`))
      const entries: (readonly [string, Node])[] = []
      for (const [k, x] of Object.entries(v)) {
        if (x === undefined) continue
        const n = go(x, [...path, k])
        if (E.isLeft(n)) return n
        entries.push([k, n.right])
      }
      return E.right({ kind: 'record', entries })
    }
    return E.left(new TesseraError('input', where, `${label} must be a host tensor { shape, dtype, data }, a number, a boolean or a function (as ${q.kind}.apply takes it), got ${describeValue(v)}`))
  }
  const entries: (readonly [string, Node])[] = []
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined) continue
    if (Object.hasOwn(RESERVED, k)) return E.left(new TesseraError('input', where, `options.${k}: ${RESERVED[k]}`))
    const n = go(v, [k])
    if (E.isLeft(n)) return n
    entries.push([k, n.right])
  }
  return E.right({ tensors, names: entries.map(([k]) => k), tree: { kind: 'record', entries } })
}

/** The options `apply` takes, with the traced inputs in place of the host tensors. */
export function buildOptions(checked: CheckedOptions, inputs: readonly Tensor[]): Record<string, unknown> {
  const go = (n: Node): unknown => {
    if (n.kind === 'tensor') return inputs[n.index]
    if (n.kind === 'value') return n.value
    return Object.fromEntries(n.entries.map(([k, c]) => [k, go(c)]))
  }
  return go(checked.tree) as Record<string, unknown>
}

/**
 * The options object handed to `apply`, recording which names it reads. An option `apply` never
 * reads had no effect (a misspelt name, or an option of another quantizer): `applyOnHost` refuses
 * it instead of returning a result computed without it. A combinator that forwards its options
 * wholesale reads them all, so its children's checks answer instead.
 */
export function watchReads<T extends object>(opts: T): { readonly opts: T; readonly read: ReadonlySet<string> } {
  const read = new Set<string>()
  const note = (k: string | symbol) => {
    if (typeof k === 'string') read.add(k)
  }
  const proxy = new Proxy(opts, {
    get(target, k, receiver) {
      note(k)
      return Reflect.get(target, k, receiver)
    },
    has(target, k) {
      note(k)
      return Reflect.has(target, k)
    },
  })
  return { opts: proxy, read }
}
