import type { AnyTypedArray, Aval, DType, Shape } from './dtype.js'
import { fmtAval, fmtShape, shapeEq, sizeOf } from './dtype.js'
import { dtypeError, paramError, shapeError } from './error.js'
import type { ElemPrim } from './prim-facts.js'
import { primFacts } from './prim-facts.js'
import { scalarRules } from './scalar.js'

type NoParams = Readonly<Record<never, never>>

/**
 * The one primitive table. Every primitive is a key here; every per-primitive rule elsewhere
 * (facts in prim-facts.ts, shape rule below, scalar semantics, reference evaluator, codegen, VJP) is
 * a mapped type over `Prim` (or over its elementwise part), so adding a primitive without its rules
 * fails the type check.
 */
export interface PrimParams {
  // unary elementwise
  neg: NoParams
  exp: NoParams
  log: NoParams
  sqrt: NoParams
  tanh: NoParams
  atanh: NoParams
  abs: NoParams
  sign: NoParams
  floor: NoParams
  round: NoParams
  recip: NoParams
  cast: { readonly dtype: DType }
  stop_gradient: NoParams
  // binary elementwise (operands have identical shapes; the tracer inserts broadcasts)
  add: NoParams
  sub: NoParams
  mul: NoParams
  div: NoParams
  idiv: NoParams
  mod: NoParams
  pow: NoParams
  max: NoParams
  min: NoParams
  lt: NoParams
  le: NoParams
  eq: NoParams
  // ternary
  where: NoParams
  // movement: index remaps, never kernels of their own
  reshape: { readonly shape: Shape }
  broadcast: { readonly shape: Shape }
  transpose: { readonly perm: readonly number[] }
  slice: { readonly start: readonly number[]; readonly end: readonly number[]; readonly step: readonly number[] }
  pad: { readonly lo: readonly number[]; readonly hi: readonly number[]; readonly value: number }
  concat: { readonly axis: number }
  // reductions
  reduce_sum: { readonly axes: readonly number[] }
  reduce_max: { readonly axes: readonly number[] }
  reduce_min: { readonly axes: readonly number[] }
  argmin: { readonly axis: number }
  argmax: { readonly axis: number }
  // contraction and indexing
  matmul: NoParams
  gather: { readonly axis: number }
  // sources
  iota: { readonly shape: Shape; readonly axis: number; readonly dtype: DType }
  full: { readonly shape: Shape; readonly value: number; readonly dtype: DType }
  constant: { readonly shape: Shape; readonly dtype: DType; readonly data: AnyTypedArray }
  random_uniform: { readonly shape: Shape }
  // collectives (distributed/): resolved between stages by `runCollective`, never by a backend
  all_reduce: { readonly op: AllReduceOp }
  axis_index: { readonly size: number }
}

/** How `all_reduce` combines the ranks' values: their sum, or their sum divided by the number of ranks. */
export type AllReduceOp = 'sum' | 'mean'

export type Prim = keyof PrimParams

export const allPrims = Object.keys(primFacts) as Prim[]

// the facts table (kind, differentiability, tolerance class) and the sets derived from it
export * from './prim-facts.js'

const FLOAT: readonly DType[] = ['float32']
const NUM: readonly DType[] = ['float32', 'int32']
const ANY: readonly DType[] = ['float32', 'int32', 'bool']

/**
 * Which operand dtypes an elementwise primitive accepts: exactly those its scalar rule
 * (scalar.ts) defines, so a dtype without semantics is rejected while tracing, never when running.
 * For cast and where the rule is keyed differently (target / branch dtype): both accept any.
 */
export const elementwiseDtypes: { readonly [P in ElemPrim]: readonly DType[] } = (() => {
  const out = {} as { [P in ElemPrim]: readonly DType[] }
  for (const p of Object.keys(scalarRules) as ElemPrim[])
    out[p] = p === 'cast' || p === 'where' ? ANY : ANY.filter((d) => scalarRules[p][d] !== undefined)
  return out
})()

const isComparison = (p: Prim) => p === 'lt' || p === 'le' || p === 'eq'

function checkDtype(op: string, a: Aval, allowed: readonly DType[], which = 'operand') {
  if (!allowed.includes(a.dtype))
    throw dtypeError(op, `${which} has dtype ${a.dtype}; expected ${allowed.join(' or ')}`)
}

function checkArity(op: string, ins: readonly Aval[], n: number) {
  if (ins.length !== n) throw paramError(op, `expects ${n} operand(s), got ${ins.length}`)
}

function checkShapeParam(op: string, shape: Shape, what = 'shape') {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0))
    throw paramError(op, `${what} ${JSON.stringify(shape)} must be a list of non-negative integers`)
}

function checkAxis(op: string, axis: number, rank: number) {
  if (!Number.isInteger(axis) || axis < 0 || axis >= rank)
    throw shapeError(op, `axis ${axis} is out of range for rank ${rank}`)
}

function checkAxes(op: string, axes: readonly number[], rank: number) {
  const seen = new Set<number>()
  for (const ax of axes) {
    checkAxis(op, ax, rank)
    if (seen.has(ax)) throw shapeError(op, `axis ${ax} appears twice in ${JSON.stringify(axes)}`)
    seen.add(ax)
  }
}

const unary =
  <P extends ElemPrim>(p: P) =>
  (ins: readonly Aval[]): Aval => {
    checkArity(p, ins, 1)
    checkDtype(p, ins[0]!, elementwiseDtypes[p])
    return ins[0]!
  }

const binary =
  <P extends ElemPrim>(p: P) =>
  (ins: readonly Aval[]): Aval => {
    checkArity(p, ins, 2)
    const [a, b] = ins as [Aval, Aval]
    checkDtype(p, a, elementwiseDtypes[p], 'left operand')
    if (a.dtype !== b.dtype) throw dtypeError(p, `operand dtypes differ: ${a.dtype} vs ${b.dtype}`)
    if (!shapeEq(a.shape, b.shape))
      throw shapeError(p, `operand shapes differ: ${fmtShape(a.shape)} vs ${fmtShape(b.shape)}`)
    return { shape: a.shape, dtype: isComparison(p) ? 'bool' : a.dtype }
  }

const reduce =
  <P extends 'reduce_sum' | 'reduce_max' | 'reduce_min'>(p: P) =>
  (ins: readonly Aval[], params: PrimParams[P]): Aval => {
    checkArity(p, ins, 1)
    const a = ins[0]!
    checkDtype(p, a, NUM)
    checkAxes(p, params.axes, a.shape.length)
    if (p !== 'reduce_sum')
      for (const ax of params.axes)
        if (a.shape[ax] === 0) throw shapeError(p, `cannot reduce empty axis ${ax} of ${fmtShape(a.shape)}`)
    return { shape: a.shape.filter((_, i) => !params.axes.includes(i)), dtype: a.dtype }
  }

const argReduce =
  <P extends 'argmin' | 'argmax'>(p: P) =>
  (ins: readonly Aval[], params: PrimParams[P]): Aval => {
    checkArity(p, ins, 1)
    const a = ins[0]!
    checkDtype(p, a, NUM)
    checkAxis(p, params.axis, a.shape.length)
    if (a.shape[params.axis] === 0) throw shapeError(p, `cannot take ${p} over empty axis ${params.axis}`)
    return { shape: a.shape.filter((_, i) => i !== params.axis), dtype: 'int32' }
  }

/** The shape/dtype rule (abstract evaluation) of every primitive. Throws a TesseraError naming the op. */
export const abstractEval: { readonly [P in Prim]: (ins: readonly Aval[], params: PrimParams[P]) => Aval } = {
  neg: unary('neg'), exp: unary('exp'), log: unary('log'), sqrt: unary('sqrt'), tanh: unary('tanh'),
  atanh: unary('atanh'), abs: unary('abs'), sign: unary('sign'), floor: unary('floor'), round: unary('round'),
  recip: unary('recip'), stop_gradient: unary('stop_gradient'),
  cast: (ins, p) => {
    checkArity('cast', ins, 1)
    if (!ANY.includes(p.dtype)) throw paramError('cast', `unknown target dtype ${String(p.dtype)}`)
    return { shape: ins[0]!.shape, dtype: p.dtype }
  },
  add: binary('add'), sub: binary('sub'), mul: binary('mul'), div: binary('div'), idiv: binary('idiv'),
  mod: binary('mod'), pow: binary('pow'), max: binary('max'), min: binary('min'), lt: binary('lt'),
  le: binary('le'), eq: binary('eq'),
  where: (ins) => {
    checkArity('where', ins, 3)
    const [c, a, b] = ins as [Aval, Aval, Aval]
    if (c.dtype !== 'bool') throw dtypeError('where', `condition has dtype ${c.dtype}; expected bool`)
    if (a.dtype !== b.dtype) throw dtypeError('where', `branch dtypes differ: ${a.dtype} vs ${b.dtype}`)
    if (!shapeEq(c.shape, a.shape) || !shapeEq(a.shape, b.shape))
      throw shapeError(
        'where',
        `shapes differ: condition ${fmtShape(c.shape)}, branches ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`,
      )
    return a
  },
  reshape: (ins, p) => {
    checkArity('reshape', ins, 1)
    checkShapeParam('reshape', p.shape)
    const a = ins[0]!
    if (sizeOf(a.shape) !== sizeOf(p.shape))
      throw shapeError(
        'reshape',
        `cannot reshape ${fmtShape(a.shape)} (${sizeOf(a.shape)} elements) to ${fmtShape(p.shape)} (${sizeOf(p.shape)} elements)`,
      )
    return { shape: p.shape, dtype: a.dtype }
  },
  broadcast: (ins, p) => {
    checkArity('broadcast', ins, 1)
    checkShapeParam('broadcast', p.shape)
    const a = ins[0]!
    const off = p.shape.length - a.shape.length
    if (off < 0)
      throw shapeError('broadcast', `cannot broadcast rank ${a.shape.length} ${fmtShape(a.shape)} to lower rank ${fmtShape(p.shape)}`)
    a.shape.forEach((d, i) => {
      if (d !== 1 && d !== p.shape[i + off])
        throw shapeError(
          'broadcast',
          `cannot broadcast ${fmtShape(a.shape)} to ${fmtShape(p.shape)}: axis ${i} has size ${d}, target ${p.shape[i + off]}`,
        )
    })
    return { shape: p.shape, dtype: a.dtype }
  },
  transpose: (ins, p) => {
    checkArity('transpose', ins, 1)
    const a = ins[0]!
    const r = a.shape.length
    const sorted = [...p.perm].sort((x, y) => x - y)
    if (p.perm.length !== r || sorted.some((v, i) => v !== i))
      throw shapeError('transpose', `perm ${JSON.stringify(p.perm)} is not a permutation of the ${r} axes of ${fmtShape(a.shape)}`)
    return { shape: p.perm.map((i) => a.shape[i]!), dtype: a.dtype }
  },
  slice: (ins, p) => {
    checkArity('slice', ins, 1)
    const a = ins[0]!
    const r = a.shape.length
    if (p.start.length !== r || p.end.length !== r || p.step.length !== r)
      throw shapeError('slice', `start/end/step must each have ${r} entries for ${fmtShape(a.shape)}`)
    const shape = a.shape.map((d, i) => {
      const s = p.start[i]!, e = p.end[i]!, st = p.step[i]!
      if (!Number.isInteger(st) || st < 1) throw paramError('slice', `step ${st} on axis ${i} must be a positive integer`)
      if (!Number.isInteger(s) || !Number.isInteger(e) || s < 0 || e > d || s > e)
        throw shapeError('slice', `range [${s}, ${e}) on axis ${i} is outside 0..${d} of ${fmtShape(a.shape)}`)
      return Math.ceil((e - s) / st)
    })
    return { shape, dtype: a.dtype }
  },
  pad: (ins, p) => {
    checkArity('pad', ins, 1)
    const a = ins[0]!
    const r = a.shape.length
    if (p.lo.length !== r || p.hi.length !== r) throw shapeError('pad', `lo/hi must each have ${r} entries for ${fmtShape(a.shape)}`)
    if ([...p.lo, ...p.hi].some((v) => !Number.isInteger(v) || v < 0))
      throw paramError('pad', `pad widths must be non-negative integers, got lo ${JSON.stringify(p.lo)} hi ${JSON.stringify(p.hi)}`)
    return { shape: a.shape.map((d, i) => d + p.lo[i]! + p.hi[i]!), dtype: a.dtype }
  },
  concat: (ins, p) => {
    if (ins.length < 1) throw paramError('concat', 'needs at least one operand')
    const a = ins[0]!
    checkAxis('concat', p.axis, a.shape.length)
    let total = 0
    ins.forEach((b, k) => {
      if (b.dtype !== a.dtype) throw dtypeError('concat', `operand ${k} has dtype ${b.dtype}, operand 0 has ${a.dtype}`)
      if (b.shape.length !== a.shape.length || b.shape.some((d, i) => i !== p.axis && d !== a.shape[i]))
        throw shapeError('concat', `operand ${k} ${fmtShape(b.shape)} does not match ${fmtShape(a.shape)} off axis ${p.axis}`)
      total += b.shape[p.axis]!
    })
    return { shape: a.shape.map((d, i) => (i === p.axis ? total : d)), dtype: a.dtype }
  },
  reduce_sum: reduce('reduce_sum'), reduce_max: reduce('reduce_max'), reduce_min: reduce('reduce_min'),
  argmin: argReduce('argmin'), argmax: argReduce('argmax'),
  matmul: (ins) => {
    checkArity('matmul', ins, 2)
    const [a, b] = ins as [Aval, Aval]
    checkDtype('matmul', a, FLOAT, 'left operand')
    checkDtype('matmul', b, FLOAT, 'right operand')
    const ra = a.shape.length, rb = b.shape.length
    if (ra < 2 || ra !== rb)
      throw shapeError('matmul', `operands must have the same rank >= 2, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`)
    for (let i = 0; i < ra - 2; i++)
      if (a.shape[i] !== b.shape[i])
        throw shapeError('matmul', `batch axis ${i} differs: ${fmtShape(a.shape)} vs ${fmtShape(b.shape)}`)
    if (a.shape[ra - 1] !== b.shape[rb - 2])
      throw shapeError(
        'matmul',
        `contracted sizes differ: ${fmtShape(a.shape)} has ${a.shape[ra - 1]} columns, ${fmtShape(b.shape)} has ${b.shape[rb - 2]} rows`,
      )
    return { shape: [...a.shape.slice(0, -1), b.shape[rb - 1]!], dtype: 'float32' }
  },
  gather: (ins, p) => {
    checkArity('gather', ins, 2)
    const [x, idx] = ins as [Aval, Aval]
    if (idx.dtype !== 'int32') throw dtypeError('gather', `indices have dtype ${idx.dtype}; expected int32`)
    checkAxis('gather', p.axis, x.shape.length)
    if (x.shape[p.axis] === 0) throw shapeError('gather', `cannot gather from empty axis ${p.axis} of ${fmtShape(x.shape)}`)
    return { shape: [...x.shape.slice(0, p.axis), ...idx.shape, ...x.shape.slice(p.axis + 1)], dtype: x.dtype }
  },
  iota: (ins, p) => {
    checkArity('iota', ins, 0)
    checkShapeParam('iota', p.shape)
    checkAxis('iota', p.axis, p.shape.length)
    checkDtype('iota', { shape: p.shape, dtype: p.dtype }, NUM, 'result')
    return { shape: p.shape, dtype: p.dtype }
  },
  full: (ins, p) => {
    checkArity('full', ins, 0)
    checkShapeParam('full', p.shape)
    if (p.dtype === 'int32' && !Number.isInteger(p.value)) throw paramError('full', `int32 fill value ${p.value} is not an integer`)
    return { shape: p.shape, dtype: p.dtype }
  },
  constant: (ins, p) => {
    checkArity('constant', ins, 0)
    checkShapeParam('constant', p.shape)
    if (p.data.length !== sizeOf(p.shape))
      throw shapeError('constant', `data has ${p.data.length} elements but shape ${fmtShape(p.shape)} needs ${sizeOf(p.shape)}`)
    return { shape: p.shape, dtype: p.dtype }
  },
  random_uniform: (ins, p) => {
    checkArity('random_uniform', ins, 1)
    checkShapeParam('random_uniform', p.shape)
    const k = ins[0]!
    if (k.dtype !== 'int32' || !shapeEq(k.shape, [2]))
      throw dtypeError('random_uniform', `key must be i32[2], got ${fmtAval(k)}`)
    return { shape: p.shape, dtype: 'float32' }
  },
  all_reduce: (ins, p) => {
    checkArity('all_reduce', ins, 1)
    if (p.op !== 'sum' && p.op !== 'mean') throw paramError('all_reduce', `op must be 'sum' or 'mean', got ${JSON.stringify(p.op)}`)
    checkDtype('all_reduce', ins[0]!, p.op === 'sum' ? NUM : FLOAT)
    return ins[0]!
  },
  axis_index: (ins, p) => {
    checkArity('axis_index', ins, 0)
    if (!Number.isInteger(p.size) || p.size < 1) throw paramError('axis_index', `size ${p.size} must be a positive integer (the number of ranks)`)
    return { shape: [], dtype: 'int32' }
  },
}

/** Apply a primitive's shape rule with the right params type. */
export function evalAval<P extends Prim>(prim: P, ins: readonly Aval[], params: PrimParams[P]): Aval {
  const rule = abstractEval[prim] as (ins: readonly Aval[], params: PrimParams[P]) => Aval
  return rule(ins, params)
}
