import type { Prim } from '../../prim.js'
import type { Var } from '../../program.js'
import type { ProgramGraph } from './graph.js'

/**
 * One float32 op of an exp map's prologue: `x op operand` (or `operand op x` when swapped),
 * where the operand is a literal or a per-row value (index into the map's row operands).
 */
export type PrologueOpBase = { readonly op: 'add' | 'sub' | 'mul' | 'div'; readonly swapped: boolean }
export type PrologueOp = PrologueOpBase & ({ readonly lit: number } | { readonly row: number })

/** An exp's argument as a map reads it: a stored base of the same shape, float32 ops, per-row operands. */
export interface ExpMapPattern {
  readonly base: Var
  readonly rows: readonly Var[]
  readonly ops: readonly PrologueOp[]
}

/** What a backend's exp map can read: rows of whole steps (SIMD width), at most `maxWidth` long. */
export interface ExpMapShape {
  readonly step: number
  readonly maxWidth: number
}

const PRO_OPS: ReadonlySet<Prim> = new Set<Prim>(['add', 'sub', 'mul', 'div'])

/**
 * The argument `arg` of an exp as a stored base of the same shape followed by float32
 * add/sub/mul/div/neg ops whose other operand is a scalar literal or a per-row value (a stored
 * value with one element per row of the last axis, broadcast along it), or undefined when it has
 * another form. Per-row operands need rows of whole map steps that fit one map call. Softmax's
 * `logits * scale - rowMax` has this form, so its shifted logits are never stored.
 */
export function expPrologue(arg: Var, g: ProgramGraph, isStored: (v: Var) => boolean, fit: ExpMapShape): ExpMapPattern | undefined {
  const shape = arg.aval.shape
  const width = shape[shape.length - 1] ?? 1
  const sameShape = (v: Var) => v.aval.shape.length === shape.length && v.aval.shape.every((d, i) => d === shape[i])
  /** Through movement ops that keep a single value. */
  const literal = (v: Var): number | undefined => {
    const e = g.def(v)
    if (!e || v.aval.dtype !== 'float32') return undefined
    if (e.prim === 'full') return Math.fround(e.params.value)
    if (e.prim === 'constant') return e.params.data.length === 1 ? Math.fround(Number(e.params.data[0])) : undefined
    if (e.prim === 'broadcast' || e.prim === 'reshape' || e.prim === 'stop_gradient') return literal(e.inputs[0]!)
    return undefined
  }
  /** A stored value with one element per row (in row order), broadcast along the last axis. */
  const perRow = (v: Var): Var | undefined => {
    const e = g.def(v)
    if (e?.prim !== 'broadcast' || !sameShape(v) || width % fit.step !== 0 || width > fit.maxWidth) return undefined
    let u = e.inputs[0]!
    const rowsN = shape.slice(0, -1).reduce((a, b) => a * b, 1)
    const us = u.aval.shape
    if (us.length !== shape.length || us[us.length - 1] !== 1 || !us.slice(0, -1).every((d, i) => d === shape[i])) return undefined
    for (;;) {
      if (isStored(u)) return u.aval.dtype === 'float32' && u.aval.shape.reduce((a, b) => a * b, 1) === rowsN ? u : undefined
      const d = g.def(u)
      if (d?.prim !== 'reshape' && d?.prim !== 'stop_gradient') return undefined
      u = d.inputs[0]!
    }
  }
  const rows: Var[] = []
  const operand = (v: Var): { lit: number } | { row: number } | undefined => {
    const lit = literal(v)
    if (lit !== undefined) return { lit }
    const r = perRow(v)
    if (!r) return undefined
    const k = rows.indexOf(r)
    if (k >= 0) return { row: k }
    rows.push(r)
    return { row: rows.length - 1 }
  }
  let v = arg
  const pending: PrologueOp[] = []
  while (!(isStored(v) && sameShape(v))) {
    const e = g.def(v)
    if (e?.prim === 'neg' && v.aval.dtype === 'float32') {
      // -x is x * -1 bit for bit (signed zeros and NaN included)
      pending.push({ op: 'mul', swapped: false, lit: -1 })
      v = e.inputs[0]!
      continue
    }
    if (!e || !PRO_OPS.has(e.prim) || v.aval.dtype !== 'float32') return undefined
    const [a, b] = e.inputs as [Var, Var]
    const ob = operand(b)
    if (ob && sameShape(a)) {
      pending.push({ op: e.prim as PrologueOp['op'], swapped: false, ...ob })
      v = a
      continue
    }
    const oa = operand(a)
    if (oa && sameShape(b)) {
      pending.push({ op: e.prim as PrologueOp['op'], swapped: true, ...oa })
      v = b
      continue
    }
    return undefined
  }
  if (v.aval.dtype !== 'float32') return undefined
  // walked from the exp down: the base's first op is the last found
  pending.reverse()
  return { base: v, rows, ops: pending }
}
