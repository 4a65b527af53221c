import * as E from 'fp-ts/lib/Either.js'
import { Builder, Tensor } from './builder.js'
import type { Aval } from './dtype.js'
import { TesseraError, asTesseraError } from './error.js'
import type { HostTensor } from './host-tensor.js'
import { isAval } from './host-tensor.js'
import type { Program } from './program.js'
import { makeProgram } from './program.js'
import type { MapLeaves, TreeDef } from './tree.js'
import { flatten, unflatten } from './tree.js'

/** A traced function: its program and how to put results back into the function's output tree. */
export interface Traced<O> {
  readonly program: Program
  readonly outDef: TreeDef
  readonly inDef: TreeDef
  /** Rebuild the output tree from a backend's flat outputs. */
  unflattenOutputs(values: readonly HostTensor[]): O
}

const isTensor = (x: unknown): x is Tensor => x instanceof Tensor

/**
 * Trace `fn` over symbolic inputs shaped like `specs` (a tree of avals; host tensors count as
 * avals) into a program. Shape and dtype errors raised while tracing come back as a Left.
 */
export function trace<S extends readonly unknown[], O>(
  specs: S,
  fn: (...args: MapLeaves<S, Aval, Tensor>) => O,
): E.Either<TesseraError, Traced<MapLeaves<O, Tensor, HostTensor>>> {
  try {
    return E.right(traceOrThrow(specs, fn))
  } catch (e) {
    return E.left(asTesseraError(e, 'trace'))
  }
}

export function traceOrThrow<S extends readonly unknown[], O>(
  specs: S,
  fn: (...args: MapLeaves<S, Aval, Tensor>) => O,
): Traced<MapLeaves<O, Tensor, HostTensor>> {
  const b = new Builder()
  const { leaves: inAvals, def: inDef } = flatten(specs, isAval, 'trace inputs')
  const inTensors = inAvals.map((a) => b.input(a))
  const args = unflatten(inDef, inTensors) as MapLeaves<S, Aval, Tensor>
  const result = fn(...(args as unknown as Parameters<typeof fn>))
  const { leaves: outs, def: outDef } = flatten(result, isTensor, 'trace outputs')
  for (const t of outs)
    if (t.builder !== b) throw new TesseraError('input', 'trace', 'an output tensor belongs to a different trace')
  const program = makeProgram(
    inTensors.map((t) => t.v),
    b.eqns,
    outs.map((t) => t.v),
  )
  return {
    program,
    outDef,
    inDef,
    unflattenOutputs: (values) => unflatten(outDef, values) as MapLeaves<O, Tensor, HostTensor>,
  }
}
