import type { AnyTypedArray, Aval, DType, Shape } from './dtype.js'
import { allocate, fmtAval, fmtShape, shapeEq, sizeOf } from './dtype.js'
import { TesseraError, paramError, shapeError } from './error.js'
import type { Prim, PrimParams } from './prim.js'
import { evalAval } from './prim.js'
import type { Eqn, Var } from './program.js'

/**
 * Records equations while a function is traced. One builder per trace: there is no global
 * tracing context, so tensors from two traces cannot be mixed by accident.
 */
export class Builder {
  private nextId = 0
  private readonly recorded: Eqn[] = []

  fresh(aval: Aval): Var {
    return Object.freeze({ id: this.nextId++, aval: Object.freeze({ shape: Object.freeze([...aval.shape]), dtype: aval.dtype }) })
  }

  get eqns(): readonly Eqn[] {
    return this.recorded
  }

  /** Record `prim[params](inputs)`; the shape rule runs now, so shape errors surface at build time. */
  bind<P extends Prim>(prim: P, params: PrimParams[P], inputs: readonly Tensor[]): Tensor {
    for (const t of inputs)
      if (t.builder !== this) throw new TesseraError('input', prim, 'operand belongs to a different trace')
    const out = this.fresh(evalAval(prim, inputs.map((t) => t.aval), params))
    this.recorded.push({ prim, params: Object.freeze({ ...params }), inputs: inputs.map((t) => t.v), out } as unknown as Eqn)
    return new Tensor(this, out)
  }

  input(aval: Aval): Tensor {
    return new Tensor(this, this.fresh(aval))
  }

  full(shape: Shape, value: number, dtype: DType = 'float32'): Tensor {
    return this.bind('full', { shape: [...shape], value, dtype }, [])
  }

  scalar(value: number, dtype: DType = 'float32'): Tensor {
    return this.full([], value, dtype)
  }

  iota(shape: Shape, axis: number, dtype: DType = 'int32'): Tensor {
    return this.bind('iota', { shape: [...shape], axis: normAxis('iota', axis, shape.length), dtype }, [])
  }

  /** Embed host data as a constant of the program (copied, so later writes to `data` do not leak in). */
  constant(data: ArrayLike<number>, shape: Shape, dtype: DType = 'float32'): Tensor {
    const copy = allocate(dtype, data.length)
    for (let i = 0; i < data.length; i++) copy[i] = data[i]!
    return this.bind('constant', { shape: [...shape], dtype, data: copy as AnyTypedArray }, [])
  }

  /** Uniform float32 draws in [0, 1) from a counter-based generator keyed by an i32[2] key. */
  randomUniform(key: Tensor, shape: Shape): Tensor {
    return this.bind('random_uniform', { shape: [...shape] }, [key])
  }

  /**
   * This program's rank among `size` ranks (i32 scalar), a collective: `runCollective` supplies it
   * and checks that its `Collective` has `size` ranks (docs/DISTRIBUTED.md).
   */
  axisIndex(size: number): Tensor {
    return this.bind('axis_index', { size }, [])
  }
}

export type TensorLike = Tensor | number

export function normAxis(op: string, axis: number, rank: number): number {
  if (!Number.isInteger(axis) || axis < -rank || axis >= rank)
    throw shapeError(op, `axis ${axis} is out of range for rank ${rank}`)
  return axis < 0 ? axis + rank : axis
}

function normAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i)
  const list = typeof axes === 'number' ? [axes] : [...axes]
  const out = list.map((a) => normAxis(op, a, rank))
  if (new Set(out).size !== out.length) throw shapeError(op, `axes ${JSON.stringify(list)} repeat an axis`)
  return out.sort((a, b) => a - b)
}

/** numpy broadcasting of two shapes, or a shape error naming the op. */
export function broadcastShapes(op: string, a: Shape, b: Shape): number[] {
  const r = Math.max(a.length, b.length)
  const out: number[] = []
  for (let i = 0; i < r; i++) {
    const da = a[a.length - r + i] ?? 1
    const db = b[b.length - r + i] ?? 1
    if (da !== db && da !== 1 && db !== 1)
      throw shapeError(op, `cannot broadcast ${fmtShape(a)} with ${fmtShape(b)}: axis ${i} of the result has sizes ${da} and ${db}`)
    out.push(da === 1 ? db : da)
  }
  return out
}

/**
 * A symbolic tensor inside a trace. Methods record equations; nothing is computed.
 * Binary methods broadcast like numpy and accept plain numbers (taken in the tensor's dtype).
 */
export class Tensor {
  constructor(
    readonly builder: Builder,
    readonly v: Var,
  ) {}

  get aval(): Aval {
    return this.v.aval
  }
  get shape(): Shape {
    return this.v.aval.shape
  }
  get dtype(): DType {
    return this.v.aval.dtype
  }
  get rank(): number {
    return this.v.aval.shape.length
  }
  get size(): number {
    return sizeOf(this.v.aval.shape)
  }
  toString(): string {
    return `Tensor(${fmtAval(this.aval)})`
  }

  private lift(x: TensorLike): Tensor {
    return typeof x === 'number' ? this.builder.scalar(x, this.dtype === 'bool' ? 'float32' : this.dtype) : x
  }

  private un<P extends Prim>(p: P): Tensor {
    return this.builder.bind(p, {} as PrimParams[P], [this])
  }

  private bin<P extends Prim>(p: P, other: TensorLike, swap = false): Tensor {
    const o = this.lift(other)
    const shape = broadcastShapes(p, this.shape, o.shape)
    const a = this.broadcastTo(shape)
    const b = o.broadcastTo(shape)
    return this.builder.bind(p, {} as PrimParams[P], swap ? [b, a] : [a, b])
  }

  // unary elementwise
  neg(): Tensor { return this.un('neg') }
  exp(): Tensor { return this.un('exp') }
  log(): Tensor { return this.un('log') }
  sqrt(): Tensor { return this.un('sqrt') }
  tanh(): Tensor { return this.un('tanh') }
  atanh(): Tensor { return this.un('atanh') }
  abs(): Tensor { return this.un('abs') }
  sign(): Tensor { return this.un('sign') }
  floor(): Tensor { return this.un('floor') }
  /** Round half to even, as torch.round. */
  round(): Tensor { return this.un('round') }
  recip(): Tensor { return this.un('recip') }
  stopGradient(): Tensor { return this.un('stop_gradient') }
  /** The sum (or mean) of this value over every rank, a collective (docs/DISTRIBUTED.md). */
  allReduce(op: 'sum' | 'mean' = 'sum'): Tensor { return this.builder.bind('all_reduce', { op }, [this]) }
  cast(dtype: DType): Tensor {
    return dtype === this.dtype ? this : this.builder.bind('cast', { dtype }, [this])
  }
  square(): Tensor { return this.mul(this) }
  sigmoid(): Tensor { return this.neg().exp().add(1).recip() }
  relu(): Tensor { return this.maximum(0) }
  clamp(lo: number, hi: number): Tensor { return this.maximum(lo).minimum(hi) }

  // binary elementwise
  add(o: TensorLike): Tensor { return this.bin('add', o) }
  sub(o: TensorLike): Tensor { return this.bin('sub', o) }
  /** o - this */
  rsub(o: TensorLike): Tensor { return this.bin('sub', o, true) }
  mul(o: TensorLike): Tensor { return this.bin('mul', o) }
  div(o: TensorLike): Tensor { return this.bin('div', o) }
  /** o / this */
  rdiv(o: TensorLike): Tensor { return this.bin('div', o, true) }
  /** Floor division of int32 tensors (Python's //). */
  idiv(o: TensorLike): Tensor { return this.bin('idiv', o) }
  /** Modulo of int32 tensors with the divisor's sign (Python's %). */
  mod(o: TensorLike): Tensor { return this.bin('mod', o) }
  pow(o: TensorLike): Tensor { return this.bin('pow', o) }
  maximum(o: TensorLike): Tensor { return this.bin('max', o) }
  minimum(o: TensorLike): Tensor { return this.bin('min', o) }
  lt(o: TensorLike): Tensor { return this.bin('lt', o) }
  le(o: TensorLike): Tensor { return this.bin('le', o) }
  gt(o: TensorLike): Tensor { return this.bin('lt', o, true) }
  ge(o: TensorLike): Tensor { return this.bin('le', o, true) }
  eq(o: TensorLike): Tensor { return this.bin('eq', o) }
  ne(o: TensorLike): Tensor { return this.eq(o).not() }
  not(): Tensor {
    requireBool('not', this)
    return this.bin('eq', this.builder.full([], 0, 'bool'))
  }
  and(o: Tensor): Tensor {
    requireBool('and', this)
    return where(this, o, this.builder.full([], 0, 'bool'))
  }
  or(o: Tensor): Tensor {
    requireBool('or', this)
    return where(this, this.builder.full([], 1, 'bool'), o)
  }

  // movement
  /** Reshape; one entry may be -1 and is inferred. */
  reshape(shape: readonly number[]): Tensor {
    const neg = shape.filter((d) => d === -1).length
    if (neg > 1) throw shapeError('reshape', `at most one -1 allowed in ${fmtShape(shape)}`)
    let target = [...shape]
    if (neg === 1) {
      const known = shape.filter((d) => d !== -1).reduce((a, b) => a * b, 1)
      if (known === 0 || this.size % known !== 0)
        throw shapeError('reshape', `cannot reshape ${fmtShape(this.shape)} (${this.size} elements) to ${fmtShape(shape)}`)
      target = shape.map((d) => (d === -1 ? this.size / known : d))
    }
    if (shapeEq(target, this.shape)) return this
    return this.builder.bind('reshape', { shape: target }, [this])
  }
  broadcastTo(shape: Shape): Tensor {
    if (shapeEq(shape, this.shape)) return this
    return this.builder.bind('broadcast', { shape: [...shape] }, [this])
  }
  /** Permute axes; with no argument, reverse them. */
  transpose(perm?: readonly number[]): Tensor {
    const p = perm ? perm.map((a) => normAxis('transpose', a, this.rank)) : [...Array(this.rank).keys()].reverse()
    if (p.every((v, i) => v === i) && p.length === this.rank) return this
    return this.builder.bind('transpose', { perm: p }, [this])
  }
  /** Swap the last two axes. */
  get mT(): Tensor {
    if (this.rank < 2) throw shapeError('mT', `needs rank >= 2, got ${fmtShape(this.shape)}`)
    const p = [...Array(this.rank).keys()]
    ;[p[this.rank - 2], p[this.rank - 1]] = [p[this.rank - 1]!, p[this.rank - 2]!]
    return this.transpose(p)
  }
  moveAxis(from: number, to: number): Tensor {
    const f = normAxis('moveAxis', from, this.rank)
    const t = normAxis('moveAxis', to, this.rank)
    const p = [...Array(this.rank).keys()].filter((a) => a !== f)
    p.splice(t, 0, f)
    return this.transpose(p)
  }
  expandDims(axis: number): Tensor {
    const a = normAxis('expandDims', axis, this.rank + 1)
    const s = [...this.shape]
    s.splice(a, 0, 1)
    return this.reshape(s)
  }
  squeeze(axes?: number | readonly number[]): Tensor {
    const ax = axes === undefined ? this.shape.flatMap((d, i) => (d === 1 ? [i] : [])) : normAxes('squeeze', axes, this.rank)
    for (const a of ax) if (this.shape[a] !== 1) throw shapeError('squeeze', `axis ${a} of ${fmtShape(this.shape)} has size ${this.shape[a]}, not 1`)
    return this.reshape(this.shape.filter((_, i) => !ax.includes(i)))
  }
  /** Slice one axis: [start, end) with step; negative start/end count from the end. */
  sliceAxis(axis: number, start: number, end?: number, step = 1): Tensor {
    const a = normAxis('slice', axis, this.rank)
    const d = this.shape[a]!
    const s = start < 0 ? start + d : start
    const e = end === undefined ? d : end < 0 ? end + d : end
    const st = this.shape.map(() => 0), en = [...this.shape], sp = this.shape.map(() => 1)
    st[a] = s; en[a] = e; sp[a] = step
    return this.slice(st, en, sp)
  }
  slice(start: readonly number[], end: readonly number[], step?: readonly number[]): Tensor {
    const sp = step ?? start.map(() => 1)
    if (start.every((v) => v === 0) && end.every((v, i) => v === this.shape[i]) && sp.every((v) => v === 1)) return this
    return this.builder.bind('slice', { start: [...start], end: [...end], step: [...sp] }, [this])
  }
  /** Take index i along an axis, dropping that axis. */
  index(axis: number, i: number): Tensor {
    const a = normAxis('index', axis, this.rank)
    const d = this.shape[a]!
    const k = i < 0 ? i + d : i
    if (k < 0 || k >= d) throw shapeError('index', `index ${i} out of range for axis ${a} of size ${d}`)
    return this.sliceAxis(a, k, k + 1).squeeze(a)
  }
  pad(lo: readonly number[], hi: readonly number[], value = 0): Tensor {
    return this.builder.bind('pad', { lo: [...lo], hi: [...hi], value }, [this])
  }
  /** Split an axis into equal chunks. */
  split(axis: number, chunks: number): Tensor[] {
    const a = normAxis('split', axis, this.rank)
    const d = this.shape[a]!
    if (!Number.isInteger(chunks) || chunks < 1 || d % chunks !== 0)
      throw shapeError('split', `axis ${a} of size ${d} does not split into ${chunks} equal chunks`)
    const w = d / chunks
    return Array.from({ length: chunks }, (_, i) => this.sliceAxis(a, i * w, (i + 1) * w))
  }

  // reductions
  private red(p: 'reduce_sum' | 'reduce_max' | 'reduce_min', axes: number | readonly number[] | undefined, keepdims: boolean): Tensor {
    const ax = normAxes(p, axes, this.rank)
    if (ax.length === 0) return this
    const r = this.builder.bind(p, { axes: ax }, [this])
    return keepdims ? r.reshape(this.shape.map((d, i) => (ax.includes(i) ? 1 : d))) : r
  }
  sum(axes?: number | readonly number[], keepdims = false): Tensor { return this.red('reduce_sum', axes, keepdims) }
  max(axes?: number | readonly number[], keepdims = false): Tensor { return this.red('reduce_max', axes, keepdims) }
  min(axes?: number | readonly number[], keepdims = false): Tensor { return this.red('reduce_min', axes, keepdims) }
  mean(axes?: number | readonly number[], keepdims = false): Tensor {
    const ax = normAxes('mean', axes, this.rank)
    const n = ax.reduce((a, i) => a * this.shape[i]!, 1)
    if (n === 0) throw shapeError('mean', `mean over an empty axis of ${fmtShape(this.shape)}`)
    return this.sum(ax, keepdims).div(n)
  }
  /** Index of the smallest value along an axis; ties go to the first index; NaN counts as smallest. */
  argmin(axis: number, keepdims = false): Tensor {
    const a = normAxis('argmin', axis, this.rank)
    const r = this.builder.bind('argmin', { axis: a }, [this])
    return keepdims ? r.expandDims(a) : r
  }
  argmax(axis: number, keepdims = false): Tensor {
    const a = normAxis('argmax', axis, this.rank)
    const r = this.builder.bind('argmax', { axis: a }, [this])
    return keepdims ? r.expandDims(a) : r
  }
  logsumexp(axis: number, keepdims = false): Tensor {
    const m = this.max(axis, true).stopGradient()
    const r = this.sub(m).exp().sum(axis, true).log().add(m)
    return keepdims ? r : r.squeeze(axis)
  }
  softmax(axis: number): Tensor {
    const e = this.sub(this.max(axis, true).stopGradient()).exp()
    return e.div(e.sum(axis, true))
  }
  logSoftmax(axis: number): Tensor {
    return this.sub(this.logsumexp(axis, true))
  }
  /** x / max(||x||, eps) along an axis, as torch.nn.functional.normalize. */
  l2Normalize(axis = -1, eps = 1e-12): Tensor {
    return this.div(this.square().sum(axis, true).sqrt().maximum(eps))
  }

  /**
   * Matrix product. Rank-1 operands are promoted as in numpy; batch axes broadcast.
   */
  matmul(other: Tensor): Tensor {
    let a: Tensor = this
    let b: Tensor = other
    const aVec = a.rank === 1, bVec = b.rank === 1
    if (aVec) a = a.expandDims(0)
    if (bVec) b = b.expandDims(1)
    if (a.rank < 2 || b.rank < 2) throw shapeError('matmul', `operands ${fmtShape(this.shape)} and ${fmtShape(other.shape)} need rank >= 1`)
    const batch = broadcastShapes('matmul', a.shape.slice(0, -2), b.shape.slice(0, -2))
    if (b.rank === 2 && a.rank > 2) {
      // (..., m, k) @ (k, n) is one (prod(...) * m, k) @ (k, n) product: the same dot products in
      // the same order, without materializing a copy of b per batch element (nor summing the
      // copies' gradients back).
      const [m, k] = a.shape.slice(-2) as [number, number]
      const rows = a.shape.slice(0, -1).reduce((x, y) => x * y, 1)
      let r = this.builder.bind('matmul', {}, [a.reshape([rows, k]), b]).reshape([...batch, m, b.shape[1]!])
      if (aVec) r = r.squeeze(-2)
      if (bVec) r = r.squeeze(-1)
      return r
    }
    a = a.broadcastTo([...batch, ...a.shape.slice(-2)])
    b = b.broadcastTo([...batch, ...b.shape.slice(-2)])
    let r = this.builder.bind('matmul', {}, [a, b])
    if (aVec) r = r.squeeze(-2)
    if (bVec) r = r.squeeze(-1)
    return r
  }

  /** numpy `take`: rows of this tensor along `axis` picked by int32 indices of any shape. */
  gather(indices: Tensor, axis = 0): Tensor {
    return this.builder.bind('gather', { axis: normAxis('gather', axis, this.rank) }, [this, indices])
  }

  fullLike(value: number, dtype: DType = this.dtype): Tensor {
    return this.builder.full(this.shape, value, dtype)
  }
}

function requireBool(op: string, t: Tensor) {
  if (t.dtype !== 'bool') throw new TesseraError('dtype', op, `needs a bool tensor, got ${t.dtype}`)
}

/** Elementwise select with numpy broadcasting. */
export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  const bl = cond.builder
  const ta = typeof a === 'number' ? bl.scalar(a, typeof b === 'number' ? 'float32' : b.dtype) : a
  const tb = typeof b === 'number' ? bl.scalar(b, ta.dtype) : b
  const shape = broadcastShapes('where', broadcastShapes('where', cond.shape, ta.shape), tb.shape)
  return bl.bind('where', {}, [cond.broadcastTo(shape), ta.broadcastTo(shape), tb.broadcastTo(shape)])
}

export function concat(ts: readonly Tensor[], axis: number): Tensor {
  if (ts.length === 0) throw paramError('concat', 'needs at least one tensor')
  const t0 = ts[0]!
  if (ts.length === 1) return t0
  return t0.builder.bind('concat', { axis: normAxis('concat', axis, t0.rank) }, ts)
}

export function stack(ts: readonly Tensor[], axis = 0): Tensor {
  if (ts.length === 0) throw paramError('stack', 'needs at least one tensor')
  const a = normAxis('stack', axis, ts[0]!.rank + 1)
  return concat(ts.map((t) => t.expandDims(a)), a)
}
