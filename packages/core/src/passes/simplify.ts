import { sizeOf } from '../dtype.js'
import { eliminateDeadCode } from '../autodiff/vjp.js'
import { applyPrim } from '../eval/interpret.js'
import type { HostTensor } from '../host-tensor.js'
import type { Prim, PrimParams } from '../prim.js'
import { primKind } from '../prim.js'
import type { Eqn, Program, Var } from '../program.js'
import { makeProgram } from '../program.js'

export interface SimplifyOptions {
  /** Largest result (in elements) folded into a `constant`; a uniform result becomes a `full` at any size. */
  readonly maxFoldSize?: number
}

/** A stable text for params: -0, NaN and typed-array contents all distinguish. */
function paramKey(v: unknown): string {
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v)
  if (ArrayBuffer.isView(v)) return `${v.constructor.name}[${Array.from(v as unknown as ArrayLike<number>, paramKey).join(',')}]`
  if (Array.isArray(v)) return `[${v.map(paramKey).join(',')}]`
  if (typeof v === 'object' && v !== null)
    return `{${Object.keys(v).sort().map((k) => `${k}:${paramKey((v as Record<string, unknown>)[k])}`).join(',')}}`
  return JSON.stringify(v) ?? 'undefined'
}

/**
 * Common-subexpression elimination: an equation with the same primitive, params and inputs as an
 * earlier one is dropped and its uses read the earlier result. Every primitive is pure
 * (random_uniform is a function of its key), so this never changes a result.
 */
export function cse(p: Program): Program {
  const seen = new Map<string, Var>()
  const rename = new Map<number, Var>()
  const use = (v: Var) => rename.get(v.id) ?? v
  const eqns: Eqn[] = []
  for (const e of p.eqns) {
    const inputs = e.inputs.map(use)
    const key = `${e.prim}${paramKey(e.params)}(${inputs.map((v) => v.id).join(',')})`
    const prev = seen.get(key)
    if (prev) {
      rename.set(e.out.id, prev)
      continue
    }
    seen.set(key, e.out)
    eqns.push({ ...e, inputs } as Eqn)
  }
  return makeProgram(p.inputs, eqns, p.outputs.map(use))
}

const isUniform = (t: HostTensor): boolean => {
  const d = t.data
  for (let i = 1; i < d.length; i++) if (!Object.is(d[i], d[0])) return false
  return d.length > 0
}

/** The equation that defines `out` as the value `t`: a `full` when uniform, else a `constant`. */
function sourceEqn(out: Var, t: HostTensor): Eqn {
  if (isUniform(t)) return { prim: 'full', params: { shape: out.aval.shape, value: t.data[0]!, dtype: out.aval.dtype }, inputs: [], out }
  return { prim: 'constant', params: { shape: out.aval.shape, dtype: out.aval.dtype, data: t.data }, inputs: [], out }
}

const movementOfFull: ReadonlySet<Prim> = new Set<Prim>(['reshape', 'broadcast', 'transpose', 'slice'])

/**
 * Constant folding: an equation whose inputs are all known values (from `full`, `constant`,
 * `iota` or earlier folds) is replaced by a source equation holding its result, computed by the
 * reference evaluator (so folding is bit-identical to running), with the same output variable,
 * so nothing downstream is renamed. Source primitives themselves are kept as they
 * are (random_uniform included: its draw stays visible in the program). An evaluation that throws
 * (an out-of-range constant gather index) is left in place so the error still surfaces at run time.
 */
export function foldConstants(p: Program, opts: SimplifyOptions = {}): Program {
  const maxFold = opts.maxFoldSize ?? 1024
  const known = new Map<number, HostTensor>()
  const fullValue = new Map<number, number>()
  const eqns: Eqn[] = []
  for (const e of p.eqns) {
    const kind = primKind[e.prim]
    if (e.prim === 'full') fullValue.set(e.out.id, (e.params as PrimParams['full']).value)
    if (e.prim === 'full' || e.prim === 'constant' || e.prim === 'iota') {
      if (sizeOf(e.out.aval.shape) <= maxFold) known.set(e.out.id, applyPrim(e.prim, [], e.params as never, e.out.aval))
      eqns.push(e)
      continue
    }
    // a collective's value comes from the other ranks: never folded, even from known inputs
    if (kind === 'source' || kind === 'collective' || e.inputs.length === 0) {
      eqns.push(e)
      continue
    }
    // movement of a uniform value is that value at the new shape, at any size
    if (movementOfFull.has(e.prim) && fullValue.has(e.inputs[0]!.id)) {
      const value = fullValue.get(e.inputs[0]!.id)!
      const params = { shape: e.out.aval.shape, value, dtype: e.out.aval.dtype }
      fullValue.set(e.out.id, value)
      if (sizeOf(e.out.aval.shape) <= maxFold) known.set(e.out.id, applyPrim('full', [], params, e.out.aval))
      eqns.push({ prim: 'full', params, inputs: [], out: e.out })
      continue
    }
    const ins = e.inputs.map((v) => known.get(v.id))
    if (ins.every((t) => t !== undefined)) {
      let value: HostTensor | undefined
      try {
        value = applyPrim(e.prim, ins as HostTensor[], e.params as never, e.out.aval)
      } catch {
        value = undefined
      }
      if (value && (sizeOf(value.shape) <= maxFold || isUniform(value))) {
        const src = sourceEqn(e.out, value)
        if (src.prim === 'full') fullValue.set(e.out.id, (src.params as PrimParams['full']).value)
        known.set(e.out.id, value)
        eqns.push(src)
        continue
      }
    }
    eqns.push(e)
  }
  return makeProgram(p.inputs, eqns, p.outputs)
}

/** Fold constants, merge common subexpressions, drop dead equations. Keeps `typecheck` true. */
export function simplify(p: Program, opts: SimplifyOptions = {}): Program {
  return eliminateDeadCode(cse(foldConstants(cse(p), opts)))
}
