import type { Caps } from '../backend.js'
import type { Aval, Shape } from '../dtype.js'
import { TesseraError } from '../error.js'
import type { HostTensor } from '../host-tensor.js'
import type { Prim, PrimParams } from '../prim.js'
import type { Program } from '../program.js'
import { collectiveImpls } from './collective.js'
import { elementwiseImpls } from './elementwise.js'
import type { Impl, ImplTable } from './impl.js'
import { movementImpls } from './movement.js'
import { reduceImpls } from './reduce.js'
import { sourceImpls } from './sources.js'

/**
 * The reference evaluator: the definition of what every primitive computes. It lives in core so
 * that passes (constant folding), core's own tests and the conformance suite can use it without
 * depending on a backend; backend-cpu wraps it as the `cpu-reference` backend.
 *
 * Numerics (the spec every other backend is measured against):
 * - float32 values; each elementwise op is computed in double and rounded once to float32
 *   (scalar.ts), which is what a correctly rounded float32 op gives.
 * - sums and matmul accumulate in float64 and round once at the end.
 * - round is half-to-even (torch.round); argmin/argmax return the first index among ties, and a
 *   NaN wins (torch propagates NaN); max/min/sum propagate NaN.
 * - int32 add/sub/mul wrap around; idiv/mod are floor division/modulo (Python's // and %) and
 *   give 0 for a zero divisor; cast float->int32 truncates toward zero, saturates, and maps NaN to 0;
 *   cast to bool is `x != 0` (NaN -> true).
 * - gather with an index outside the axis throws, naming the index and the axis.
 */
export const referenceImpls: ImplTable = { ...elementwiseImpls, ...movementImpls, ...reduceImpls, ...sourceImpls, ...collectiveImpls }

/** What the reference guarantees, as a backend's caps: exact results, NaN and Inf as specified. */
export const referenceCaps: Caps = {
  exactIntLimit: 2 ** 31,
  strictNaN: true,
  maxKernelArgs: Infinity,
  maxTextureSize: Infinity,
  atol: 0,
  rtol: 0,
  transcendentalRtol: 0,
  fuses: false,
}

/** Evaluate one primitive on concrete operands (what constant folding calls). */
export function applyPrim<P extends Prim>(prim: P, ins: readonly HostTensor[], params: PrimParams[P], out: Aval): HostTensor {
  const impl = referenceImpls[prim] as Impl<P>
  return { shape: out.shape as Shape, dtype: out.dtype, data: impl(ins, params, out) } as HostTensor
}

/**
 * Evaluate a program one primitive at a time. Values are dropped after their last use, so
 * memory follows the program's live set.
 */
export function interpretProgram(program: Program, inputs: readonly HostTensor[]): HostTensor[] {
  const env = new Map<number, HostTensor>()
  program.inputs.forEach((v, i) => env.set(v.id, inputs[i]!))
  const lastUse = new Map<number, number>()
  program.eqns.forEach((e, k) => e.inputs.forEach((v) => lastUse.set(v.id, k)))
  const keep = new Set(program.outputs.map((v) => v.id))
  program.eqns.forEach((e, k) => {
    const ins = e.inputs.map((v) => {
      const t = env.get(v.id)
      if (!t) throw new TesseraError('runtime', 'interpretProgram', `variable ${v.id} has no value (equation ${k}, ${e.prim})`)
      return t
    })
    env.set(e.out.id, applyPrim(e.prim, ins, e.params as never, e.out.aval))
    for (const v of e.inputs) if (lastUse.get(v.id) === k && !keep.has(v.id)) env.delete(v.id)
  })
  return program.outputs.map((v) => env.get(v.id)!)
}
