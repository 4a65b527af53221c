import * as E from 'fp-ts/lib/Either.js'
import { Builder, Tensor } from '../builder.js'
import type { Aval } from '../dtype.js'
import { fmtAval } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import type { TesseraError } from '../error.js'
import { TesseraError as TErr, asTesseraError } from '../error.js'
import { makeProgram } from '../program.js'
import type { Traced } from '../trace.js'
import { traceOrThrow } from '../trace.js'
import type { MapLeaves } from '../tree.js'
import { flatten, unflatten } from '../tree.js'
import { eliminateDeadCode, gradInline } from './vjp.js'

const isTensor = (x: unknown): x is Tensor => x instanceof Tensor

/** What `valueAndGrad` gives: the function's own result and the gradient of its loss. */
export interface ValueAndGrad<O, G> {
  readonly value: O
  readonly grad: G
}

type GradOf<A extends readonly unknown[], N> = N extends number
  ? A[N]
  : N extends readonly number[]
    ? { -readonly [K in keyof N]: N[K] extends number ? A[N[K]] : never }
    : never

/**
 * The loss of a result: the result itself when it is a tensor, its `loss` field when it has
 * one, else its first leaf. It must be a scalar f32[].
 */
function lossLeaf(result: unknown, leaves: readonly Tensor[]): number {
  let t: Tensor | undefined
  if (result instanceof Tensor) t = result
  else if (typeof result === 'object' && result !== null && (result as { loss?: unknown }).loss instanceof Tensor)
    t = (result as { loss: Tensor }).loss
  else t = leaves[0]
  if (!t) throw new TErr('input', 'valueAndGrad', 'the function returned no tensor to differentiate')
  if (t.dtype !== 'float32' || t.rank !== 0)
    throw new TErr('shape', 'valueAndGrad', `the loss must be a scalar f32[], got ${fmtAval(t.aval)}`)
  return leaves.indexOf(t)
}

/**
 * Reverse-mode differentiation of a traceable function, usable inside another trace:
 * `valueAndGrad(fn, argnums)(...args)` traces `fn` on its own, differentiates the resulting
 * program with `vjp`'s rules and emits forward and backward equations into the trace that
 * `args` belong to. `fn` returns a scalar f32[] loss, or a tree whose `loss` field (or first
 * leaf) is the loss; other leaves are returned as they are (auxiliary outputs, not
 * differentiated). `grad` mirrors the structure of the argument(s) named by `argnums`.
 */
export function valueAndGrad<A extends readonly unknown[], O, N extends number | readonly number[] = 0>(
  fn: (...args: A) => O,
  argnums?: N,
): (...args: A) => ValueAndGrad<O, GradOf<A, N>> {
  const nums: number[] = argnums === undefined ? [0] : typeof argnums === 'number' ? [argnums] : [...(argnums as readonly number[])]
  return (...args: A) => {
    nums.forEach((n) => {
      if (!Number.isInteger(n) || n < 0 || n >= args.length)
        throw new TErr('param', 'valueAndGrad', `argnum ${n} is out of range for ${args.length} argument(s)`)
    })
    const perArg = args.map((a, i) => flatten(a, isTensor, `valueAndGrad argument ${i}`))
    const offsets: number[] = []
    let total = 0
    for (const p of perArg) {
      offsets.push(total)
      total += p.leaves.length
    }
    const argLeaves = perArg.flatMap((p) => p.leaves)
    const outer = argLeaves[0]?.builder
    if (!outer) throw new TErr('input', 'valueAndGrad', 'the arguments hold no tensor')
    if (argLeaves.some((t) => t.builder !== outer))
      throw new TErr('input', 'valueAndGrad', 'the arguments belong to different traces')

    // trace fn on its own, so the program it gives can be differentiated as a whole
    const b = new Builder()
    const inner = argLeaves.map((t) => b.input(t.aval))
    const innerArgs = perArg.map((p, i) => unflatten(p.def, inner.slice(offsets[i], offsets[i]! + p.leaves.length)))
    const result = fn(...(innerArgs as unknown as A))
    const { leaves: outs, def: outDef } = flatten(result, isTensor, 'valueAndGrad outputs')
    if (outs.some((t) => t.builder !== b))
      throw new TErr('input', 'valueAndGrad', 'the function returned a tensor that is not computed from its arguments (a closed-over tensor of another trace?)')
    const lossIndex = lossLeaf(result, outs)
    const program = makeProgram(inner.map((t) => t.v), b.eqns, outs.map((t) => t.v))

    const wrt = nums.flatMap((n) => perArg[n]!.leaves.map((_, j) => offsets[n]! + j))
    const { outputs, grads } = gradInline(outer, program, argLeaves, wrt, lossIndex)
    let g = 0
    const gradTrees = nums.map((n) => {
      const k = perArg[n]!.leaves.length
      const tree = unflatten(perArg[n]!.def, grads.slice(g, g + k))
      g += k
      return tree
    })
    const grad = (typeof argnums === 'object' ? gradTrees : gradTrees[0]) as GradOf<A, N>
    return { value: unflatten(outDef, outputs) as O, grad }
  }
}

/** As valueAndGrad, returning only the gradient. */
export function gradOf<A extends readonly unknown[], O, N extends number | readonly number[] = 0>(
  fn: (...args: A) => O,
  argnums?: N,
): (...args: A) => GradOf<A, N> {
  const vg = valueAndGrad(fn, argnums)
  return (...args: A) => vg(...args).grad
}

/**
 * Trace `fn` over `specs` and differentiate it: one program computing the function's outputs
 * then the gradients (`{ value, grad }` once unflattened). Errors come back as a Left.
 */
export function traceValueAndGrad<S extends readonly unknown[], O, N extends number | readonly number[] = 0>(
  specs: S,
  fn: (...args: MapLeaves<S, Aval, Tensor>) => O,
  argnums?: N,
): E.Either<TesseraError, Traced<MapLeaves<ValueAndGrad<O, GradOf<MapLeaves<S, Aval, Tensor>, N>>, Tensor, HostTensor>>> {
  try {
    const vg = valueAndGrad(fn as (...args: MapLeaves<S, Aval, Tensor>) => O, argnums)
    const traced = traceOrThrow(specs, (...args: MapLeaves<S, Aval, Tensor>) => vg(...args))
    return E.right({ ...traced, program: eliminateDeadCode(traced.program) } as never)
  } catch (e) {
    return E.left(asTesseraError(e, 'valueAndGrad'))
  }
}
