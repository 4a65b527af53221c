import * as E from 'fp-ts/lib/Either.js'
import type { Aval, Backend, Executable, HostTensor, MapLeaves, Tensor } from '@tessera/core'
import { TesseraError, asTesseraError, checkAvals, flatten, hashProgram, isHostTensor, trace } from '@tessera/core'
import type { Named, QuantizeResult, Quantizer } from './quantizer.js'

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
 * Trace `fn` for the shapes of `args` (trees of host tensors), compile it on `backend` (through
 * `cache` when given) and run it on the args' data. Every failure comes back as a Left.
 */
export async function runOnHost<A extends readonly unknown[], O>(
  backend: Backend,
  args: A,
  fn: (...args: MapLeaves<A, HostTensor, Tensor>) => O,
  cache?: CompileCache,
): Promise<E.Either<TesseraError, MapLeaves<O, Tensor, HostTensor>>> {
  const traced = trace(args as unknown as readonly Aval[], fn as never)
  if (E.isLeft(traced)) return traced
  const { program, unflattenOutputs } = traced.right
  let leaves: HostTensor[]
  try {
    leaves = flatten(args, isHost, 'args').leaves
  } catch (e) {
    return E.left(asTesseraError(e, 'runOnHost'))
  }
  const ok = checkAvals('runOnHost', program.inputs.map((v) => v.aval), leaves)
  if (E.isLeft(ok)) return ok
  try {
    const exe = cache ? cache.get(backend, program) : backend.compile(program)
    try {
      const outs = await exe.run(leaves)
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
}

export interface HostApplyArgs {
  readonly params: Named<HostTensor>
  readonly state: Named<HostTensor>
  readonly x: HostTensor
  readonly training?: boolean
  /** i32[2] key; required where the quantizer draws random numbers in this call. */
  readonly key?: HostTensor
}

/** Run a quantizer's `apply` on host tensors: trace for these shapes, compile (cached), run. */
export async function applyOnHost(
  q: Quantizer,
  args: HostApplyArgs,
  backend: Backend,
  cache?: CompileCache,
): Promise<E.Either<TesseraError, HostApplyResult>> {
  const missing = [...Object.keys(q.paramSpecs).filter((k) => !(k in args.params)), ...Object.keys(q.stateSpecs).filter((k) => !(k in args.state))]
  if (missing.length > 0) return E.left(new TesseraError('input', `${q.kind}.apply`, `missing parameter/state entries: ${missing.join(', ')}`))
  const key = args.key ?? null
  const r = await runOnHost(
    backend,
    [args.params, args.state, args.x, key] as const,
    (params, state, x, k) => {
      const res: QuantizeResult = q.apply(params as Named<Tensor>, state as Named<Tensor>, x as Tensor, {
        training: args.training ?? false,
        ...(k ? { key: k as Tensor } : {}),
      })
      return { quantized: res.quantized, indices: res.indices, loss: res.loss, losses: { ...res.losses }, state: { ...res.state }, extra: { ...(res.extra ?? {}) } }
    },
    cache,
  )
  return r as E.Either<TesseraError, HostApplyResult>
}

/** Run `indicesToCodes` on host indices. */
export async function indicesToCodesOnHost(
  q: Quantizer,
  params: Named<HostTensor>,
  indices: HostTensor,
  backend: Backend,
  cache?: CompileCache,
  state?: Named<HostTensor>,
): Promise<E.Either<TesseraError, HostTensor>> {
  return runOnHost(
    backend,
    [params, indices, state ?? {}] as const,
    (p, i, s) => q.indicesToCodes(p as Named<Tensor>, i as Tensor, s as Named<Tensor>),
    cache,
  ) as Promise<E.Either<TesseraError, HostTensor>>
}
