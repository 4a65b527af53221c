import type { Tensor } from '../builder.js'
import { Builder } from '../builder.js'
import { fmtAval } from '../dtype.js'
import { TesseraError } from '../error.js'
import type { Prim } from '../prim.js'
import { primFacts } from '../prim.js'
import type { Eqn, Program, Var } from '../program.js'
import { makeProgram } from '../program.js'
import type { VjpRule } from './rules.js'
import { vjpRules } from './rules.js'

/**
 * Replay a program's equations into `builder` on the given input tensors and return its
 * outputs: how a program is called inside another trace.
 */
export function inlineProgram(builder: Builder, program: Program, inputs: readonly Tensor[]): Tensor[] {
  return replay(builder, program, inputs).outputs
}

function replay(builder: Builder, program: Program, inputs: readonly Tensor[]) {
  if (inputs.length !== program.inputs.length)
    throw new TesseraError('input', 'inlineProgram', `program takes ${program.inputs.length} input(s), got ${inputs.length}`)
  const env = new Map<number, Tensor>()
  program.inputs.forEach((v, i) => {
    const t = inputs[i]!
    if (t.dtype !== v.aval.dtype || t.shape.length !== v.aval.shape.length || t.shape.some((d, j) => d !== v.aval.shape[j]))
      throw new TesseraError('input', 'inlineProgram', `input ${i} is ${fmtAval(t.aval)}; expected ${fmtAval(v.aval)}`)
    env.set(v.id, t)
  })
  const get = (v: Var) => env.get(v.id)!
  const eqnOuts: Tensor[] = []
  for (const e of program.eqns) {
    const t = builder.bind(e.prim, e.params as never, e.inputs.map(get))
    env.set(e.out.id, t)
    eqnOuts.push(t)
  }
  return { env, eqnOuts, outputs: program.outputs.map(get) }
}

/**
 * Reverse-mode pass over a replayed program. `seeds` gives the cotangent of some outputs
 * (by output position); returns the cotangent of each input in `wrt` (zeros where no path).
 */
function backward(
  builder: Builder,
  program: Program,
  inputs: readonly Tensor[],
  seeds: ReadonlyMap<number, Tensor>,
  wrt: readonly number[],
): { outputs: Tensor[]; grads: Tensor[] } {
  wrt.forEach((i) => {
    const v = program.inputs[i]
    if (!v) throw new TesseraError('param', 'vjp', `wrt index ${i} is out of range for ${program.inputs.length} input(s)`)
    if (v.aval.dtype !== 'float32')
      throw new TesseraError('dtype', 'vjp', `cannot differentiate with respect to input ${i} of dtype ${v.aval.dtype}; only float32 inputs have gradients`)
  })
  const { env, eqnOuts, outputs } = replay(builder, program, inputs)

  // forward activity: which float32 variables depend on a differentiated input
  const active = new Set<number>(wrt.map((i) => program.inputs[i]!.id))
  for (const e of program.eqns)
    if (e.out.aval.dtype === 'float32' && primFacts[e.prim].differentiable && e.inputs.some((v) => active.has(v.id)))
      active.add(e.out.id)

  const cts = new Map<number, Tensor>()
  const accumulate = (id: number, g: Tensor) => {
    const prev = cts.get(id)
    cts.set(id, prev ? prev.add(g) : g)
  }
  for (const [k, ct] of seeds) {
    const v = program.outputs[k]!
    if (active.has(v.id)) accumulate(v.id, ct)
  }

  for (let k = program.eqns.length - 1; k >= 0; k--) {
    const e: Eqn = program.eqns[k]!
    const ct = cts.get(e.out.id)
    if (!ct || !active.has(e.out.id)) continue
    cts.delete(e.out.id)
    const need = e.inputs.map((v) => active.has(v.id))
    const rule = vjpRules[e.prim] as VjpRule<Prim>
    const ins = e.inputs.map((v) => env.get(v.id)!)
    const gs = rule({ ct, ins, out: eqnOuts[k]!, params: e.params, need })
    e.inputs.forEach((v, i) => {
      const g = gs[i]
      if (g && need[i]) accumulate(v.id, g)
    })
  }

  const grads = wrt.map((i) => {
    const v = program.inputs[i]!
    return cts.get(v.id) ?? builder.full(v.aval.shape, 0)
  })
  return { outputs, grads }
}

/**
 * Drop equations whose results no output needs. Every primitive is pure (random draws are
 * functions of their key), so this never changes what a program computes.
 */
export function eliminateDeadCode(program: Program): Program {
  const live = new Set(program.outputs.map((v) => v.id))
  const keep: boolean[] = new Array(program.eqns.length).fill(false)
  for (let k = program.eqns.length - 1; k >= 0; k--) {
    const e = program.eqns[k]!
    if (!live.has(e.out.id)) continue
    keep[k] = true
    for (const v of e.inputs) live.add(v.id)
  }
  return makeProgram(program.inputs, program.eqns.filter((_, k) => keep[k]), program.outputs)
}

function checkWrt(program: Program, wrt: readonly number[] | undefined): number[] {
  return wrt ? [...wrt] : program.inputs.flatMap((v, i) => (v.aval.dtype === 'float32' ? [i] : []))
}

/**
 * The vector-Jacobian product of a program, as a program.
 *
 * Inputs: the program's inputs, then one cotangent per float32 output (in output order).
 * Outputs: the program's outputs, then the cotangent of each input in `wrt` (default: every
 * float32 input), in `wrt` order.
 */
export function vjp(program: Program, wrt?: readonly number[]): Program {
  const w = checkWrt(program, wrt)
  const b = new Builder()
  const inputs = program.inputs.map((v) => b.input(v.aval))
  const floatOuts = program.outputs.flatMap((v, k) => (v.aval.dtype === 'float32' ? [k] : []))
  const ctInputs = floatOuts.map((k) => b.input(program.outputs[k]!.aval))
  const seeds = new Map(floatOuts.map((k, j) => [k, ctInputs[j]!] as const))
  const { outputs, grads } = backward(b, program, inputs, seeds, w)
  return eliminateDeadCode(makeProgram([...inputs, ...ctInputs].map((t) => t.v), b.eqns, [...outputs, ...grads].map((t) => t.v)))
}

/**
 * The gradient of one scalar float32 output (default: output 0) as a program.
 * Inputs: the program's inputs. Outputs: the program's outputs, then d(output)/d(input) for
 * each input in `wrt` (default: every float32 input).
 */
export function grad(program: Program, wrt?: readonly number[], output = 0): Program {
  const out = program.outputs[output]
  if (!out) throw new TesseraError('param', 'grad', `output ${output} is out of range for ${program.outputs.length} output(s)`)
  if (out.aval.dtype !== 'float32' || out.aval.shape.length !== 0)
    throw new TesseraError('shape', 'grad', `output ${output} must be a scalar f32[], got ${fmtAval(out.aval)}`)
  const w = checkWrt(program, wrt)
  const b = new Builder()
  const inputs = program.inputs.map((v) => b.input(v.aval))
  const { outputs, grads } = backward(b, program, inputs, new Map([[output, b.scalar(1)]]), w)
  return eliminateDeadCode(makeProgram(inputs.map((t) => t.v), b.eqns, [...outputs, ...grads].map((t) => t.v)))
}

/** As `grad`, emitting into an existing trace: returns (outputs, grads) as tensors of `builder`. */
export function gradInline(
  builder: Builder,
  program: Program,
  inputs: readonly Tensor[],
  wrt: readonly number[],
  output: number,
): { outputs: Tensor[]; grads: Tensor[] } {
  const out = program.outputs[output]!
  if (out.aval.dtype !== 'float32' || out.aval.shape.length !== 0)
    throw new TesseraError('shape', 'grad', `the differentiated output must be a scalar f32[], got ${fmtAval(out.aval)}`)
  return backward(builder, program, inputs, new Map([[output, builder.scalar(1)]]), wrt)
}
