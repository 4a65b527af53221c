import * as E from 'fp-ts/lib/Either.js'
import type { Aval, Backend, Executable, HostTensor, MapLeaves, Tensor } from '@tessera/core'
import { TesseraError, asTesseraError, checkAvals, checkHostTensor, checkInto, describeValue, flatten, flattenAs, fmtAval, hashProgram, isHostTensor, trace, where as where_ } from '@tessera/core'
import { checkEntry, checkNamed } from './check-args.js'
import type { NonFinitePolicy } from './finite.js'
import { describeProbe, probeFinite, probeOk } from './finite.js'
import type { CheckedOptions, HostCallOptions } from './host-options.js'
import { buildOptions, checkHostOptions, watchReads } from './host-options.js'
import type { ApplyOptions, Named, QuantizeResult, Quantizer } from './quantizer.js'
import { outOfRange } from './index-range.js'
import type { ExtraSelection } from './extra-select.js'
import { checkExtraSelection, selectExtra } from './extra-select.js'

export type { CallOptionsOf, HostCallOptions, HostOption } from './host-options.js'

/**
 * Compiled programs keyed by backend and structural program hash, so running the same quantizer on
 * the same shapes twice compiles once. A value you create and pass; dispose it when done.
 */
export interface CompileCache {
  get(backend: Backend, program: Parameters<Backend['compile']>[0]): Executable
  readonly size: number
  dispose(): void
}

export function compileCache(): CompileCache {
  const entries = new Map<string, Executable>()
  // a backend value gets an id for the cache key: two backends with one name are still distinct
  const ids = new WeakMap<Backend, number>()
  let nextId = 0
  return {
    get(backend, program) {
      if (!ids.has(backend)) ids.set(backend, nextId++)
      const key = `${ids.get(backend)}:${hashProgram(program)}`
      let exe = entries.get(key)
      if (!exe) {
        exe = backend.compile(program)
        entries.set(key, exe)
      }
      return exe
    },
    get size() {
      return entries.size
    },
    dispose() {
      for (const e of entries.values()) e.dispose()
      entries.clear()
    },
  }
}

const isHost = (x: unknown): x is HostTensor => isHostTensor(x)

/**
 * Every leaf of an argument tree must be a valid host tensor: a plain array of numbers, a bare
 * typed array, `null` inside a record or a mislabelled tensor is a Left naming its path, before
 * anything is traced.
 */
function checkLeaves(t: unknown, path: string, where: string): E.Either<TesseraError, void> {
  if (t === undefined || t === null) return E.right(undefined)
  if (Array.isArray(t)) {
    for (let i = 0; i < t.length; i++) {
      const r = checkLeaves(t[i], `${path}[${i}]`, where)
      if (E.isLeft(r)) return r
    }
    return E.right(undefined)
  }
  if (typeof t === 'object' && !ArrayBuffer.isView(t)) {
    const proto = Object.getPrototypeOf(t)
    const looksLikeTensor = Object.hasOwn(t, 'data') || Object.hasOwn(t, 'dtype') || Object.hasOwn(t, 'shape')
    if (looksLikeTensor || (proto !== Object.prototype && proto !== null)) return E.map(() => undefined)(checkHostTensor(t, path, where))
    for (const k of Object.keys(t)) {
      const r = checkLeaves((t as Record<string, unknown>)[k], `${path}.${k}`, where)
      if (E.isLeft(r)) return r
    }
    return E.right(undefined)
  }
  return E.map(() => undefined)(checkHostTensor(t, path, where))
}

const checkBackend = (backend: unknown, where: string): E.Either<TesseraError, Backend> =>
  typeof backend === 'object' && backend !== null && typeof (backend as Backend).compile === 'function' && typeof (backend as Backend).name === 'string'
    ? E.right(backend as Backend)
    : E.left(new TesseraError('input', where, `backend must be a Backend value (cpuBackend(), ...), got ${describeValue(backend)}`))

/** A tree of the form T whose tensors may each be left out: arrays to write T's tensors into. */
export type IntoTree<T> = T extends HostTensor
  ? HostTensor | undefined
  : T extends readonly unknown[]
    ? { readonly [K in keyof T]?: IntoTree<T[K]> }
    : T extends object
      ? { readonly [K in keyof T]?: IntoTree<T[K]> }
      : T

/** Options of `runOnHost`. */
export interface HostRunOptions<O> {
  /**
   * Arrays to write the results into, as a tree of the result's form (an earlier result of the
   * same call is one): each tensor given receives this call's value instead of a fresh array,
   * and the result holds that very array; one left out gets a fresh array. Each must have its
   * result's shape and dtype and share no memory with an argument or another entry (the Left
   * names it by its path, `into.state.embed`); see the core's RunOptions.
   */
  readonly into?: IntoTree<MapLeaves<O, Tensor, HostTensor>>
  /** Names of the arguments for messages (`args[i]` otherwise): `params`, `state`, ... */
  readonly argNames?: readonly string[]
}

/**
 * Trace `fn` for the shapes of `args` (trees of host tensors), compile it on `backend` (through
 * `cache` when given) and run it on the args' data. Every failure comes back as a Left.
 */
export async function runOnHost<A extends readonly unknown[], O>(
  backend: Backend,
  args: A,
  fn: (...args: MapLeaves<A, HostTensor, Tensor>) => O,
  cache?: CompileCache,
  options?: HostRunOptions<O>,
): Promise<E.Either<TesseraError, MapLeaves<O, Tensor, HostTensor>>> {
  const okBackend = checkBackend(backend, 'runOnHost')
  if (E.isLeft(okBackend)) return okBackend
  if (!Array.isArray(args)) return E.left(new TesseraError('input', 'runOnHost', `args must be an array of argument trees, got ${describeValue(args)}`))
  const okLeaves = checkLeaves(args, 'args', 'runOnHost')
  if (E.isLeft(okLeaves)) return okLeaves
  const traced = trace(args as unknown as readonly Aval[], fn as never)
  if (E.isLeft(traced)) return traced
  const { program, unflattenOutputs } = traced.right
  let leaves: HostTensor[]
  let paths: string[]
  try {
    // each argument flattened on its own, so that a leaf's path starts with its argument's name
    const flat = args.map((a, i) => flatten(a, isHost, options?.argNames?.[i] ?? `args[${i}]`))
    leaves = flat.flatMap((f) => f.leaves)
    paths = flat.flatMap((f) => f.paths)
  } catch (e) {
    return E.left(asTesseraError(e, 'runOnHost'))
  }
  const ok = checkAvals('runOnHost', program.inputs.map((v) => v.aval), leaves)
  if (E.isLeft(ok)) return ok
  let into: (HostTensor | undefined)[] | undefined
  if (options?.into !== undefined) {
    try {
      const named = flattenAs(traced.right.outDef, options.into, 'runOnHost', 'into')
      into = named.leaves as (HostTensor | undefined)[]
      const okInto = checkInto('runOnHost', program.outputs.map((v) => v.aval), leaves, into, { into: named.paths, inputs: paths })
      if (E.isLeft(okInto)) return okInto
    } catch (e) {
      return E.left(asTesseraError(e, 'runOnHost'))
    }
  }
  try {
    const exe = cache ? cache.get(backend, program) : backend.compile(program)
    try {
      const outs = await exe.run(leaves, into ? { into } : undefined)
      return E.right(unflattenOutputs(outs) as MapLeaves<O, Tensor, HostTensor>)
    } finally {
      if (!cache) exe.dispose()
    }
  } catch (e) {
    return E.left(asTesseraError(e, `runOnHost(${backend.name})`))
  }
}

export interface HostApplyResult {
  readonly quantized: HostTensor
  readonly indices: HostTensor
  readonly loss: HostTensor
  readonly losses: Named<HostTensor>
  readonly state: Named<HostTensor>
  readonly extra: Named<HostTensor>
  /**
   * Parameters the call rewrote (VectorQuantize's `updatedParams`: a learnable codebook after
   * dead-code revival or an in-place optimizer step); absent where the quantizer rewrites none.
   */
  readonly updatedParams?: Named<HostTensor>
  /** With `nonFinite: 'skip-update'`: what was not finite (the returned state is then the state passed in). */
  readonly nonFinite?: string
}

export interface HostApplyArgs<Q extends Quantizer = Quantizer> {
  readonly params: Named<HostTensor>
  readonly state: Named<HostTensor>
  readonly x: HostTensor
  readonly training?: boolean
  /** i32[2] key; required where the quantizer draws random numbers in this call. */
  readonly key?: HostTensor
  /**
   * What to do with non-finite input or statistics (see `NonFinitePolicy`); the default is
   * `'error'` in training and `'propagate'` in eval.
   */
  readonly nonFinite?: NonFinitePolicy
  /**
   * The quantizer's own per-call options (`mask`, `lens`, `topk`, `indices`, `beamSize`,
   * `returnAllCodes`, ...), typed from its `apply`, with host tensors for tensors. Tensor options
   * are checked as host tensors here and against the call by the quantizer while tracing; an
   * option `apply` never reads is refused.
   */
  readonly options?: HostCallOptions<Q>
  /**
   * The names of the `extra` entries to return (default: all of them). The others are not
   * outputs of the compiled program, so what only they need is not computed: VectorQuantize's
   * `codebook_dist` holds a float32 distance per token and code, and a call that leaves it out
   * lets the backend find the nearest codes without storing any distance. A name this call does
   * not return is refused.
   */
  readonly extra?: ExtraSelection
  /**
   * An earlier result of this call (same quantizer, shapes and options), or part of one, whose
   * arrays this call writes its results into instead of fresh ones; the result returned holds
   * them. A training loop that alternates two results allocates nothing per step. No entry may
   * share memory with an argument: pass the result before last, not the one whose state this
   * call reads (the Left names the entry). A call that fails may have written part of them.
   */
  readonly into?: HostApplyInto
}

/** What `into` may be: a HostApplyResult, or any part of one. */
export type HostApplyInto = IntoTree<Omit<HostApplyResult, 'nonFinite'>> & { readonly nonFinite?: string }

const POLICIES: readonly NonFinitePolicy[] = ['error', 'skip-update', 'propagate']

/** The checks of `applyOnHost`'s arguments, in order; the Left names the argument. */
function checkApplyArgs(q: Quantizer, args: HostApplyArgs, where: string) {
  if (typeof args !== 'object' || args === null) return E.left(new TesseraError('input', where, `args must be { params, state, x, training?, key?, nonFinite?, options?, extra?, into? }, got ${describeValue(args)}`))
  const known = ['params', 'state', 'x', 'training', 'key', 'nonFinite', 'options', 'extra', 'into']
  const unknown = Object.keys(args).find((k) => !known.includes(k))
  if (unknown !== undefined) return E.left(new TesseraError('input', where, `args has an unknown field ${JSON.stringify(unknown)} (known: ${known.join(', ')})`))
  if (args.training !== undefined && typeof args.training !== 'boolean') return E.left(new TesseraError('input', where, `training must be a boolean, got ${describeValue(args.training)}`))
  if (args.nonFinite !== undefined && !POLICIES.includes(args.nonFinite))
    return E.left(new TesseraError('input', where, `nonFinite must be one of ${POLICIES.join(', ')}, got ${describeValue(args.nonFinite)}`))
  const step = checkStepTensors(q, args, where)
  if (E.isLeft(step)) return step
  const options = checkHostOptions(q, args.options, where)
  if (E.isLeft(options)) return options
  const extra = checkExtraSelection(args.extra, where)
  if (E.isLeft(extra)) return extra
  const none = keepsNoToken(args.options)
  // the reference raises here (k-means on no rows) or returns a 0/0 loss: name the option instead
  if (args.training && none) return E.left(new TesseraError('input', where, `options.${none} keeps no token: a training step needs at least one kept token (its masked losses and k-means are over kept tokens)`))
  return E.right({ ...step.right, options: options.right, extra: extra.right })
}

/**
 * The tensors of one step (`applyOnHost`, `applyOnRank`): params and state complete against the
 * quantizer's specs, x float32, key an i32[2] when given; the Left names the argument.
 */
export function checkStepTensors(
  q: Quantizer,
  args: { readonly params: unknown; readonly state: unknown; readonly x: unknown; readonly key?: unknown },
  where: string,
): E.Either<TesseraError, { params: Named<HostTensor>; state: Named<HostTensor>; x: HostTensor; key: HostTensor | null }> {
  const params = checkNamed(args.params, q.paramSpecs, q.kind, where, { what: 'params', complete: true })
  if (E.isLeft(params)) return params
  const state = checkNamed(args.state, q.stateSpecs, q.kind, where, { what: 'state', complete: true })
  if (E.isLeft(state)) return state
  const x = checkHostTensor(args.x, 'x', where)
  if (E.isLeft(x)) return x
  if (x.right.dtype !== 'float32') return E.left(new TesseraError('dtype', where, `x must be float32, got ${fmtAval(x.right)}`))
  let key: HostTensor | null = null
  if (args.key !== undefined && args.key !== null) {
    const k = checkEntry(args.key, { shape: [2], dtype: 'int32' }, 'key', 'a random key', where)
    if (E.isLeft(k)) return k
    key = k.right
  }
  return E.right({ params: params.right, state: state.right, x: x.right, key })
}

/** 'mask' or 'lens' when that (already checked) option keeps no token at all. */
function keepsNoToken(options: unknown): 'mask' | 'lens' | undefined {
  if (typeof options !== 'object' || options === null) return undefined
  // other dtypes are refused by name while tracing
  for (const [name, dtype] of [['mask', 'bool'], ['lens', 'int32']] as const) {
    const t = (options as Record<string, { dtype?: string; data?: ArrayLike<number> } | undefined>)[name]
    if (t?.dtype === dtype && t.data && t.data.length > 0 && Array.prototype.every.call(t.data, (v: number) => v <= 0)) return name
  }
  return undefined
}

/** The quantizer's options for one traced call, refusing (by throwing, so tracing answers a Left) any given option `apply` never read. */
export function callApply(
  q: Quantizer,
  where: string,
  opts: CheckedOptions,
  inputs: readonly Tensor[],
  shared: ApplyOptions,
  call: (o: ApplyOptions) => QuantizeResult,
): QuantizeResult {
  const watched = watchReads({ ...buildOptions(opts, inputs), ...shared })
  const res = call(watched.opts)
  const unread = opts.names.find((n) => !watched.read.has(n))
  if (unread !== undefined)
    throw new TesseraError('input', where, `options.${unread} is not read by ${q.kind}.apply in this call: not one of its options (misspelt?), or one it ignores with these arguments`)
  return res
}

/** Whether a decoded config (nested layers and groups included) turns k-means init on anywhere. */
function usesKmeans(cfg: unknown, depth = 0): boolean {
  if (typeof cfg !== 'object' || cfg === null || depth > 8) return false
  if ((cfg as { kmeans_init?: unknown }).kmeans_init === true) return true
  return Object.values(cfg).some((v) => usesKmeans(v, depth + 1))
}

/**
 * The key an eval call without one runs with, or null. k-means init draws its means with the
 * call's key, but once every codebook is initted `where(initted, embed, means)` discards the draw,
 * and nothing else draws in eval; so such a call gets a fixed key instead of being refused, and its
 * outputs are those of any key.
 */
function inittedEvalKey(q: Quantizer, state: Named<HostTensor>, training: boolean): HostTensor | null {
  if (training || !usesKmeans(q.config)) return null
  const flags = Object.keys(q.stateSpecs).filter((n) => n === '_codebook.initted' || n.endsWith('._codebook.initted'))
  if (flags.length === 0 || !flags.every((n) => state[n]!.data[0] === 1)) return null
  return { shape: [2], dtype: 'int32', data: new Int32Array(2) }
}

/**
 * Run a quantizer's `apply` on host tensors: check the arguments against the quantizer's specs,
 * trace for these shapes, compile (cached), run; then apply the finite-input policy, whose check
 * is part of the traced program.
 */
export async function applyOnHost<Q extends Quantizer>(
  q: Q,
  args: HostApplyArgs<Q>,
  backend: Backend,
  cache?: CompileCache,
): Promise<E.Either<TesseraError, HostApplyResult>> {
  const where = `${(q as Partial<Quantizer> | null)?.kind ?? 'quantizer'}.apply`
  if (typeof q?.apply !== 'function' || typeof q.paramSpecs !== 'object' || typeof q.stateSpecs !== 'object')
    return E.left(new TesseraError('input', 'applyOnHost', `q must be a quantizer (from a factory such as fsq(...)), got ${describeValue(q)}`))
  const okBackend = checkBackend(backend, where)
  if (E.isLeft(okBackend)) return okBackend
  const checked = checkApplyArgs(q, args as HostApplyArgs, where)
  if (E.isLeft(checked)) return checked
  const { params, state, x, options, extra } = checked.right
  const training = args.training ?? false
  const key = checked.right.key ?? inittedEvalKey(q, state, training)
  const policy: NonFinitePolicy = args.nonFinite ?? (training ? 'error' : 'propagate')
  let probeInfo: { inputSize: number; labels: readonly string[] } | undefined
  const r = await runOnHost(
    backend,
    [params, state, x, key, options.tensors] as const,
    (p, s, xs, k, ot) => {
      const shared: ApplyOptions = { training, ...(k ? { key: k as Tensor } : {}) }
      const res: QuantizeResult & { updatedParams?: Named<Tensor> } = callApply(q, where, options, ot as readonly Tensor[], shared, (o) =>
        q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, o),
      )
      let nextState: Named<Tensor> = { ...res.state }
      let updated: Named<Tensor> | undefined = res.updatedParams ? { ...res.updatedParams } : undefined
      let finite: Tensor | undefined
      if (policy !== 'propagate') {
        const stats = [
          ...Object.entries(res.state).map(([n, t]) => [`state entry ${n}`, t] as const),
          ['loss', res.loss] as const,
          ...Object.entries(res.losses).map(([n, t]) => [`loss term ${n}`, t] as const),
          ...Object.entries(updated ?? {}).map(([n, t]) => [`updated parameter ${n}`, t] as const),
        ]
        const probe = probeFinite(xs as Tensor, stats)
        probeInfo = { inputSize: probe.inputSize, labels: probe.labels }
        finite = probe.first
        if (policy === 'skip-update') {
          const ok = probeOk(probe)
          const old = s as Named<Tensor>
          nextState = Object.fromEntries(Object.entries(res.state).map(([n, t]) => [n, old[n] ? where_(ok, t, old[n]!) : t]))
          // a skipped step rewrites no parameter either
          const oldP = p as Named<Tensor>
          if (updated) updated = Object.fromEntries(Object.entries(updated).map(([n, t]) => [n, oldP[n] ? where_(ok, t, oldP[n]!) : t]))
        }
      }
      return {
        quantized: res.quantized, indices: res.indices, loss: res.loss, losses: { ...res.losses }, state: nextState, extra: selectExtra(res.extra, extra, where),
        ...(updated ? { updatedParams: updated } : {}),
        ...(finite ? { finite } : {}),
      }
    },
    cache,
    // a result's nonFinite is a message, not an array to write into
    { ...(args.into !== undefined ? { into: intoTree(args.into) as never } : {}), argNames: ['params', 'state', 'x', 'key', 'options'] },
  )
  if (E.isLeft(r)) return r
  const { finite, ...out } = r.right as HostApplyResult & { finite?: HostTensor }
  if (finite && probeInfo) {
    const found = describeProbe(finite.data[0]!, probeInfo.inputSize, probeInfo.labels, x)
    if (found !== undefined) {
      if (policy === 'error')
        return E.left(new TesseraError('input', where, `${found}; a training call refuses non-finite values and returns no new state (option nonFinite: 'skip-update' or 'propagate' changes this)`))
      return E.right({ ...out, nonFinite: found })
    }
  }
  return E.right(out)
}

/** `into` without a result's nonFinite message (anything else is checked against the outputs). */
function intoTree(into: HostApplyInto): unknown {
  if (typeof into !== 'object' || into === null || Array.isArray(into) || !('nonFinite' in into)) return into
  const { nonFinite: _message, ...arrays } = into
  return arrays
}

/** Run `indicesToCodes` on host indices, checking params (and state, when given) against the specs first. */
export async function indicesToCodesOnHost(
  q: Quantizer,
  params: Named<HostTensor>,
  indices: HostTensor,
  backend: Backend,
  cache?: CompileCache,
  state?: Named<HostTensor>,
): Promise<E.Either<TesseraError, HostTensor>> {
  if (typeof q?.indicesToCodes !== 'function' || typeof q.paramSpecs !== 'object' || typeof q.stateSpecs !== 'object')
    return E.left(new TesseraError('input', 'indicesToCodesOnHost', `q must be a quantizer (from a factory such as fsq(...)), got ${describeValue(q)}`))
  const where = `${q.kind}.indicesToCodes`
  const okBackend = checkBackend(backend, where)
  if (E.isLeft(okBackend)) return okBackend
  const p = checkNamed(params, q.paramSpecs, q.kind, where, { what: 'params', complete: true })
  if (E.isLeft(p)) return p
  // state is optional: entries a quantizer needs for decoding are checked when present
  const s = state === undefined ? E.right({}) : checkNamed(state, q.stateSpecs, q.kind, where, { what: 'state', complete: false })
  if (E.isLeft(s)) return s
  const idx = checkHostTensor(indices, 'indices', where)
  if (E.isLeft(idx)) return idx
  if (idx.right.dtype !== 'int32') return E.left(new TesseraError('dtype', where, `indices must be int32, got ${fmtAval(idx.right)}`))
  const bad = outOfRange(q, idx.right)
  if (bad !== undefined) return E.left(new TesseraError('input', where, bad))
  return runOnHost(
    backend,
    [p.right, idx.right, s.right] as const,
    (pp, i, ss) => q.indicesToCodes(pp as Named<Tensor>, i as Tensor, ss as Named<Tensor>),
    cache,
  ) as Promise<E.Either<TesseraError, HostTensor>>
}
