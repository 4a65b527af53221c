import * as E from 'fp-ts/lib/Either.js'
import type { Aval, Backend, Collective, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, checkCollective, describeValue, flatten, isHostTensor, runCollective, trace } from '@tessera/core'
import type { HostCallOptions } from './host-options.js'
import { checkHostOptions } from './host-options.js'
import type { Named, QuantizeResult, Quantizer } from './quantizer.js'
import type { CompileCache, HostApplyResult } from './run.js'
import { callApply, checkStepTensors } from './run.js'
import type { ExtraSelection } from './extra-select.js'
import { checkExtraSelection, selectExtra } from './extra-select.js'

export interface RankApplyArgs<Q extends Quantizer = Quantizer> {
  readonly params: Named<HostTensor>
  readonly state: Named<HostTensor>
  /** This rank's shard of the global batch (every rank's shard has the same shape). */
  readonly x: HostTensor
  readonly training?: boolean
  /** i32[2]; the same key on every rank (draws over the global batch depend on it). */
  readonly key?: HostTensor
  /**
   * The quantizer's own per-call options, as `applyOnHost` takes them; tensor options are this
   * rank's (a `mask` of this rank's shard, for instance). Every rank passes the same option names.
   */
  readonly options?: HostCallOptions<Q>
  /** The names of the `extra` entries to return, as `applyOnHost` takes them (default: all). */
  readonly extra?: ExtraSelection
}

/**
 * `applyOnHost` for one rank of a synchronised step (docs/DISTRIBUTED.md): traces `q.apply` with
 * `world: { size: collective.size }` and runs it with `runCollective`, so the statistics the
 * reference all-reduces are summed over ranks. Every rank calls this with the same params, state
 * and key and its own shard. Non-finite values propagate (there is no per-rank finite policy: a
 * rank that refused would leave the others waiting).
 */
export async function applyOnRank<Q extends Quantizer>(
  q: Q,
  args: RankApplyArgs<Q>,
  backend: Backend,
  collective: Collective,
  cache?: CompileCache,
): Promise<E.Either<TesseraError, HostApplyResult>> {
  if (typeof q?.apply !== 'function' || typeof q.paramSpecs !== 'object' || typeof q.stateSpecs !== 'object')
    return E.left(new TesseraError('input', 'applyOnRank', `q must be a quantizer (from a factory such as vectorQuantize(...)), got ${describeValue(q)}`))
  const where = `${q.kind}.apply`
  const bad = checkCollective(collective, where)
  if (bad) return E.left(bad)
  if (typeof backend?.compile !== 'function') return E.left(new TesseraError('input', where, `backend must be a Backend value, got ${describeValue(backend)}`))
  if (typeof args !== 'object' || args === null) return E.left(new TesseraError('input', where, `args must be { params, state, x, training?, key?, options?, extra? }, got ${describeValue(args)}`))
  const known = ['params', 'state', 'x', 'training', 'key', 'options', 'extra']
  const unknown = Object.keys(args).find((k) => !known.includes(k))
  if (unknown !== undefined) return E.left(new TesseraError('input', where, `args has an unknown field ${JSON.stringify(unknown)} (known: ${known.join(', ')})`))
  if (args.training !== undefined && typeof args.training !== 'boolean') return E.left(new TesseraError('input', where, `training must be a boolean, got ${describeValue(args.training)}`))
  const step = checkStepTensors(q, args, where)
  if (E.isLeft(step)) return step
  const options = checkHostOptions(q, args.options, where)
  if (E.isLeft(options)) return options
  const extra = checkExtraSelection(args.extra, where)
  if (E.isLeft(extra)) return extra
  const { params, state, x, key } = step.right
  const training = args.training ?? false
  const world = { size: collective.size }
  const specs = [params, state, x, key, options.right.tensors] as const
  const traced = trace(specs as unknown as readonly Aval[], (...ins: unknown[]) => {
    const [p, s, xs, k, ot] = ins as [Named<Tensor>, Named<Tensor>, Tensor, Tensor | null, readonly Tensor[]]
    const r: QuantizeResult = callApply(q, where, options.right, ot, { training, world, ...(k ? { key: k } : {}) }, (o) => q.apply(p, s, xs, o))
    return { quantized: r.quantized, indices: r.indices, loss: r.loss, losses: { ...r.losses }, state: { ...r.state }, extra: selectExtra(r.extra, extra.right, where) }
  })
  if (E.isLeft(traced)) return traced
  const leaves = flatten(specs, isHostTensor, 'args').leaves
  const out = await runCollective(backend, traced.right.program, leaves, collective, cache ? { cache } : {})
  if (E.isLeft(out)) return out
  return E.right(traced.right.unflattenOutputs(out.right) as unknown as HostApplyResult)
}
