import * as E from 'fp-ts/lib/Either.js'
import type { Backend, Executable } from '../backend.js'
import { fmtAval, shapeEq } from '../dtype.js'
import { TesseraError, asTesseraError } from '../error.js'
import type { HostTensor } from '../host-tensor.js'
import { checkAvals } from '../host-tensor.js'
import type { AllReduceOp } from '../prim.js'
import type { Program } from '../program.js'
import type { Collective } from './collective.js'
import { checkCollective } from './collective.js'
import type { StagedProgram } from './stages.js'
import { splitStages } from './stages.js'

export interface RunCollectiveOptions {
  /** Compiled stages are taken from here and not disposed (the quantizers' `compileCache()` fits). */
  readonly cache?: { get(backend: Backend, program: Program): Executable }
}

/**
 * Runs a program that may hold collectives: its stages on `backend` (which never sees a
 * collective), each round of all-reduces through `comm`, `axis_index` as `comm.rank`. Every rank
 * runs the same program with its own inputs. Without collectives this is `run`. Errors come back
 * as a Left; a rank that fails leaves the others waiting in their next round, so a transport's
 * launcher should stop every rank when one fails (the worker-threads one does).
 */
export async function runCollective(
  backend: Backend,
  program: Program,
  inputs: readonly HostTensor[],
  comm: Collective,
  opts: RunCollectiveOptions = {},
): Promise<E.Either<TesseraError, HostTensor[]>> {
  const where = `runCollective(${(backend as Partial<Backend> | null)?.name ?? 'backend'})`
  const bad = checkCollective(comm, 'runCollective')
  if (bad) return E.left(bad)
  const ok = checkAvals('runCollective', program.inputs.map((v) => v.aval), inputs)
  if (E.isLeft(ok)) return ok
  let staged: StagedProgram
  try {
    staged = splitStages(program)
  } catch (e) {
    return E.left(asTesseraError(e, 'runCollective'))
  }
  for (const e of staged.axisIndex)
    if (e.params.size !== comm.size)
      return E.left(new TesseraError('input', 'axis_index', `the program was traced for ${e.params.size} rank(s), but the collective has ${comm.size}`))
  const env = new Map<number, HostTensor>()
  program.inputs.forEach((v, i) => env.set(v.id, inputs[i]!))
  const rank: HostTensor = { shape: [], dtype: 'int32', data: Int32Array.of(comm.rank) }
  for (const e of staged.axisIndex) env.set(e.out.id, rank)
  const valueOf = (id: number): HostTensor => {
    const t = env.get(id)
    if (!t) throw new TesseraError('runtime', 'runCollective', `variable ${id} has no value (a stage split bug)`)
    return t
  }
  try {
    for (let s = 0; s < staged.stages.length; s++) {
      const stage = staged.stages[s]!.program
      if (stage.outputs.length > 0) {
        const exe = opts.cache ? opts.cache.get(backend, stage) : backend.compile(stage)
        try {
          const outs = await exe.run(stage.inputs.map((v) => valueOf(v.id)))
          stage.outputs.forEach((v, i) => env.set(v.id, outs[i]!))
        } finally {
          if (!opts.cache) await exe.dispose()
        }
      }
      await resolveRound(staged.rounds[s] ?? [], env, valueOf, comm)
    }
    return E.right(program.outputs.map((v) => valueOf(v.id)))
  } catch (e) {
    return E.left(asTesseraError(e, where))
  }
}

/** One round: one `allReduce` call per op (sums first), checked against the collectives' avals. */
async function resolveRound(
  round: readonly { readonly params: { readonly op: AllReduceOp }; readonly inputs: readonly { id: number }[]; readonly out: { id: number; aval: { shape: readonly number[]; dtype: HostTensor['dtype'] } } }[],
  env: Map<number, HostTensor>,
  valueOf: (id: number) => HostTensor,
  comm: Collective,
): Promise<void> {
  for (const op of ['sum', 'mean'] as const) {
    const eqns = round.filter((e) => e.params.op === op)
    if (eqns.length === 0) continue
    const got = await comm.allReduce(eqns.map((e) => valueOf(e.inputs[0]!.id)), op)
    if (!Array.isArray(got) || got.length !== eqns.length)
      throw new TesseraError('runtime', 'all_reduce', `the collective returned ${Array.isArray(got) ? got.length : 'no'} tensor(s) for ${eqns.length}`)
    eqns.forEach((e, i) => {
      const t = got[i]!
      if (t?.dtype !== e.out.aval.dtype || !shapeEq(t.shape, e.out.aval.shape))
        throw new TesseraError('runtime', 'all_reduce', `the collective returned ${t ? fmtAval(t) : String(t)} for a ${fmtAval(e.out.aval)} value`)
      env.set(e.out.id, t)
    })
  }
}
