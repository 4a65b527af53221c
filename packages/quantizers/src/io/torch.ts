import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor } from '@tessera/core'
import { TesseraError, checkHostTensor, describeValue, random } from '@tessera/core'
import { groupedResidualFSQ, groupedResidualLFQ } from '../grouped/grouped-residual.js'
import { fsp } from '../fsp/fsp.js'
import { hierarchicalVQ } from '../hierarchical/hierarchical-vq.js'
import { fsq } from '../fsq/fsq.js'
import { latentQuantize } from '../latent/latent.js'
import { lfq } from '../lfq/lfq.js'
import type { Init, Named, Quantizer } from '../quantizer.js'
import { randomProjectionQuantizer } from '../random-projection/random-projection.js'
import { residualFSQ } from '../residual/residual-fsq.js'
import { residualLFQ } from '../residual/residual-lfq.js'
import { groupedResidualVQ } from '../residual-vq/grouped-residual-vq.js'
import { residualVQ } from '../residual-vq/residual-vq.js'
import { residualSimVQ } from '../simvq/residual-simvq.js'
import { simVQ } from '../simvq/simvq.js'
import { vectorQuantize } from '../vq/vector-quantize.js'
import { LAZY_AFFINE_BUFFERS } from '../vq/affine.js'
import { OPTIMIZER_PREFIX } from '../vq/in-place-optimizer.js'
import { decodeSafetensors } from './safetensors.js'
import { splitStateDict } from './state-dict.js'

/**
 * PyTorch checkpoints of vector-quantize-pytorch in one call. A torch `state_dict()` differs from
 * Tessera's params and state in three ways, each bridged here: it lacks the reference's
 * non-persistent buffers (derived from the config), it repeats a shared codebook under every
 * ResidualVQ layer, and it may hold half-precision or double tensors (widened by the decoder).
 */

/**
 * Buffers (at any prefix) that depend only on the config, so a file may leave them out: the
 * reference registers all but LFQ's `mask` with `persistent=False`, and `mask` is the bit order.
 */
export const CONFIG_DERIVED_BUFFERS = [
  '_levels', '_basis', 'implicit_codebook', // FSQ, FSP, LatentQuantize
  'mask', 'codebook', // LFQ
  'scales', 'soft_clamp_input_value', // ResidualFSQ
  'commitment_loss_weight', 'quantization_loss_weight', // LatentQuantize
] as const

const isDerived = (name: string) => CONFIG_DERIVED_BUFFERS.some((n) => name === n || name.endsWith(`.${n}`))

/** `name` is `entry` at some prefix: the prefix, else undefined. */
const prefixOf = (name: string, entry: string): string | undefined =>
  name === entry ? '' : name.endsWith(`.${entry}`) ? name.slice(0, name.length - entry.length) : undefined

/**
 * State a torch checkpoint never holds, taken from a fresh init: the in-place codebook optimizer's
 * (torch keeps optimizer state out of `state_dict`), and VectorQuantize's affine batch statistics,
 * which the reference registers only at the first forward; their Tessera flags `*_needs_init` are
 * derived from whether the file has them.
 */
function tesseraOnlyState(stateSpecs: Named<Aval>, fresh: Named<HostTensor>, tensors: Named<HostTensor>): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = {}
  for (const n of Object.keys(stateSpecs)) {
    if (n.startsWith(OPTIMIZER_PREFIX) || n.includes(`.${OPTIMIZER_PREFIX}`)) out[n] = fresh[n]!
    for (const [buf, flag] of LAZY_AFFINE_BUFFERS) {
      if (prefixOf(n, buf) !== undefined) out[n] = fresh[n]!
      const p = prefixOf(n, flag)
      if (p !== undefined) out[n] = { shape: [], dtype: 'bool', data: Uint8Array.of(Object.hasOwn(tensors, `${p}${buf}`) ? 0 : 1) }
    }
  }
  return out
}

/** A layer's copy of a shared codebook: torch's ResidualVQ points every layer at layer 0's `_codebook`. */
const SHARED_COPY = /^(.*?)layers\.(\d+)\.(_codebook\..+)$/

export interface TorchLoadOptions {
  /** Names in the file to skip (derived views a file may carry, such as a stacked `codebooks`). */
  readonly ignore?: readonly string[]
}

/**
 * A bool scalar the file holds in another form: releases of the reference before 1.31 registered
 * `initted` as a float tensor of shape [1]. Anything but one 0 or 1 is left for the spec check.
 */
function asSpec(t: HostTensor, spec: Aval): HostTensor {
  if (spec.dtype !== 'bool' || spec.shape.length !== 0 || t.dtype === 'bool' || t.data.length !== 1) return t
  const v = t.data[0]
  return v === 0 || v === 1 ? { shape: [], dtype: 'bool', data: Uint8Array.of(v) } : t
}

/** The first element where two tensors differ (NaN equals NaN), or -1; a shape or dtype change is element 0. */
function firstDifference(a: HostTensor, b: HostTensor): number {
  if (a.dtype !== b.dtype || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return 0
  for (let i = 0; i < a.data.length; i++) {
    const x = a.data[i]!, y = b.data[i]!
    if (x !== y && !(x !== x && y !== y)) return i
  }
  return -1
}

/**
 * A vector-quantize-pytorch `state_dict` (for example `decodeSafetensors(bytes).tensors`) -> the
 * quantizer's params and state. Buffers the reference does not save are derived from the config
 * (a file may still hold them; its values are used). A ResidualVQ with `shared_codebook` holds one
 * codebook under `layers.0.`; torch repeats it under every layer, and each copy must equal layer 0's
 * (a Left names the first that does not). Every other name, shape and dtype is checked as in
 * `splitStateDict`; each failure is a Left naming the entry.
 */
export function loadTorchStateDict(q: Quantizer, tensors: Named<HostTensor>, opts: TorchLoadOptions = {}): E.Either<TesseraError, Init> {
  if (typeof q?.init !== 'function' || typeof q.paramSpecs !== 'object' || typeof q.stateSpecs !== 'object')
    return E.left(new TesseraError('input', 'loadTorchStateDict', `q must be a quantizer (from a factory such as fsq(...)), got ${describeValue(q)}`))
  if (typeof tensors !== 'object' || tensors === null || Array.isArray(tensors))
    return E.left(new TesseraError('input', 'state-dict', `a state dict must be an object of named host tensors, got ${describeValue(tensors)}`))
  const specOf = (name: string): Aval | undefined =>
    Object.hasOwn(q.paramSpecs, name) ? q.paramSpecs[name] : Object.hasOwn(q.stateSpecs, name) ? q.stateSpecs[name] : undefined
  const ignore = new Set(Array.isArray(opts?.ignore) ? opts.ignore : [])
  const sd: Record<string, HostTensor> = Object.create(null) as Record<string, HostTensor>
  for (const name of Object.keys(tensors)) {
    if (ignore.has(name)) continue
    const t = tensors[name]!
    const spec = specOf(name)
    if (spec) {
      // a malformed entry goes through unchanged, for splitStateDict to refuse by name
      sd[name] = E.isRight(checkHostTensor(t, 'the entry', `state-dict[${name}]`)) ? asSpec(t, spec) : t
      continue
    }
    const copy = SHARED_COPY.exec(name)
    const first = copy && copy[2] !== '0' ? `${copy[1]}layers.0.${copy[3]}` : undefined
    const firstSpec = first === undefined ? undefined : specOf(first)
    if (first === undefined || !firstSpec) {
      sd[name] = t // not a parameter or buffer: splitStateDict refuses it by name
      continue
    }
    const where = `state-dict[${name}]`
    if (!Object.hasOwn(tensors, first))
      return E.left(new TesseraError('input', where, `is a copy of the shared codebook entry ${first}, which the state dict lacks`))
    for (const [n, v] of [[first, tensors[first]], [name, t]] as const) {
      const ok = checkHostTensor(v, 'the entry', `state-dict[${n}]`)
      if (E.isLeft(ok)) return ok
    }
    const a = asSpec(tensors[first]!, firstSpec), b = asSpec(t, firstSpec)
    const at = firstDifference(a, b)
    if (at >= 0)
      return E.left(new TesseraError('input', where,
        `differs from ${first} (element ${at}: ${String(b.data[at])} vs ${String(a.data[at])}); ${q.kind} shares one codebook across layers, so torch's copies under every layer must be equal`))
  }
  // the derivable buffers of a fresh init: their values do not depend on the key
  const fresh = q.init(random.keyFromSeed(0))
  const derived = { ...Object.fromEntries(Object.entries(fresh.state).filter(([n]) => isDerived(n))), ...tesseraOnlyState(q.stateSpecs, fresh.state, tensors) }
  return splitStateDict(q, sd, { defaults: { params: {}, state: derived } })
}

/** Builds a quantizer from the reference's keyword arguments. */
export type QuantizerFactory = (kwargs: unknown) => E.Either<TesseraError, Quantizer>

/** The reference's class name -> Tessera's factory, for `fromSafetensors`. A plain value: pass your own to add classes. */
export const QUANTIZER_FACTORIES: Readonly<Record<string, QuantizerFactory>> = {
  VectorQuantize: vectorQuantize,
  ResidualVQ: residualVQ,
  GroupedResidualVQ: groupedResidualVQ,
  FSQ: fsq,
  ResidualFSQ: residualFSQ,
  GroupedResidualFSQ: groupedResidualFSQ,
  FSP: fsp,
  LFQ: lfq,
  ResidualLFQ: residualLFQ,
  GroupedResidualLFQ: groupedResidualLFQ,
  LatentQuantize: latentQuantize,
  SimVQ: simVQ,
  ResidualSimVQ: residualSimVQ,
  RandomProjectionQuantizer: randomProjectionQuantizer,
  HierarchicalVQ: hierarchicalVQ,
}

/** `__metadata__` keys naming the constructor: the reference's class name and its kwargs as a JSON object. */
export const META_CLASS = 'tessera.class'
export const META_KWARGS = 'tessera.kwargs'

export interface FromSafetensorsOptions extends TorchLoadOptions {
  readonly factories?: Readonly<Record<string, QuantizerFactory>>
}

export interface LoadedQuantizer extends Init {
  readonly quantizer: Quantizer
  readonly metadata: Record<string, string>
}

/**
 * A safetensors file whose `__metadata__` names the constructor (`tessera.class`, and
 * `tessera.kwargs` as JSON; `scripts/export-torch.py` writes both) -> the quantizer built from it,
 * with its params and state loaded by `loadTorchStateDict`.
 */
export function fromSafetensors(bytes: Uint8Array, opts: FromSafetensorsOptions = {}): E.Either<TesseraError, LoadedQuantizer> {
  if (!(bytes instanceof Uint8Array)) return E.left(new TesseraError('input', 'fromSafetensors', `bytes must be a Uint8Array (a Buffer is one), got ${describeValue(bytes)}`))
  const decoded = decodeSafetensors(bytes)
  if (E.isLeft(decoded)) return decoded
  const { tensors, metadata } = decoded.right
  const where = 'safetensors.__metadata__'
  const cls = metadata[META_CLASS]
  if (cls === undefined)
    return E.left(new TesseraError('input', where, `has no "${META_CLASS}" (the file does not name its quantizer: build one and call loadTorchStateDict, or export with scripts/export-torch.py)`))
  const factories = typeof opts?.factories === 'object' && opts.factories !== null ? opts.factories : QUANTIZER_FACTORIES
  const make = Object.hasOwn(factories, cls) ? factories[cls] : undefined
  if (typeof make !== 'function') return E.left(new TesseraError('input', `${where}[${META_CLASS}]`, `class ${cls} is not in the library (known: ${Object.keys(factories).join(', ')})`))
  let kwargs: unknown = {}
  const text = metadata[META_KWARGS]
  if (text !== undefined) {
    try {
      kwargs = JSON.parse(text)
    } catch (e) {
      return E.left(new TesseraError('input', `${where}[${META_KWARGS}]`, `is not JSON: ${(e as Error).message}`))
    }
    if (typeof kwargs !== 'object' || kwargs === null || Array.isArray(kwargs))
      return E.left(new TesseraError('input', `${where}[${META_KWARGS}]`, `must be a JSON object of keyword arguments, got ${describeValue(kwargs)}`))
  }
  const q = make(kwargs)
  if (E.isLeft(q)) return q
  const loaded = loadTorchStateDict(q.right, tensors, opts)
  if (E.isLeft(loaded)) return loaded
  return E.right({ quantizer: q.right, ...loaded.right, metadata })
}
