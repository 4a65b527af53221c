import type { Eqn, Var } from '@tessera/core'
import { castTo } from '@tessera/core'

/**
 * Elementwise loops as WebAssembly SIMD, four elements a step (elem-kernel.ts builds and runs
 * them): the optimizer's updates (Adam's moments and parameter step over arrays of 10^5
 * elements) and the scalar quantizers' fused loops (FSQ's bound, round and scale; LFQ's sign and
 * bits), which as JS loops cost a float64 op and a rounding per float32 op. Every op rounds as the
 * reference's does: IEEE float32 add, sub, mul, div and sqrt round as Math.fround of the float64
 * op (a float64 result of float32 operands rounds once to the same float32); floor and round
 * (half to even: f32x4.nearest) are exact; int32 add, sub, mul and neg wrap as `| 0` and
 * Math.imul do; float -> int32 casts truncate and saturate with NaN -> 0, as the reference's do.
 * tanh is a float32 evaluation within one ulp of the rounded value (simd-tanh.ts), the backend's
 * transcendental contract.
 * max and min are the reference's (NaN when either operand is NaN, else the first where it is
 * strictly greater or less, else the second: max(+0, -0) is -0).
 * Booleans live as all-ones / all-zero lanes. Operands are whole stored float32 or int32 values
 * of the output's size (read at the output's index), stored vectors broadcast along the leading
 * axes (biases, per-dimension constants), per-row values broadcast along trailing axes (a row's
 * norm, read by each of its elements; any elementwise expression of stored per-row values), or
 * single stored values and constants broadcast to every element.
 */
export type ElemType = 'f32' | 'i32' | 'bool'
export type ElemExpr =
  | { readonly kind: 'read'; readonly slot: number; readonly type: ElemType }
  | { readonly kind: 'scalar'; readonly slot: number; readonly type: ElemType }
  /** A stored vector of `width` elements repeated along the output (a bias): element o reads o % width. */
  | { readonly kind: 'row'; readonly slot: number; readonly width: number; readonly type: ElemType }
  /**
   * A stored value holding one element per run of `inner` output elements (a per-row value
   * broadcast along trailing axes): element o reads o / inner. `inner` is a power of two of at
   * least 4, so each vector of four lies in one run.
   */
  | { readonly kind: 'perRow'; readonly slot: number; readonly inner: number; readonly type: ElemType }
  | { readonly kind: 'const'; readonly value: number; readonly type: ElemType }
  /** `type` is the result's (a cast's target). */
  | { readonly kind: 'op'; readonly prim: ElemOp; readonly args: readonly ElemExpr[]; readonly id: number; readonly type: ElemType }

export type ElemOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min' | 'sqrt' | 'neg' | 'abs' | 'floor' | 'round' | 'recip' | 'tanh'
  | 'lt' | 'le' | 'eq' | 'cast' | 'where'

/** The ops each operand type takes (comparisons, casts and where take any listed type). */
const OPS: { readonly [t in ElemType]: ReadonlySet<string> } = {
  f32: new Set(['add', 'sub', 'mul', 'div', 'max', 'min', 'sqrt', 'neg', 'abs', 'floor', 'round', 'recip', 'tanh', 'lt', 'le', 'eq', 'cast']),
  i32: new Set(['add', 'sub', 'mul', 'neg', 'abs', 'lt', 'le', 'eq', 'cast']),
  bool: new Set(['eq', 'cast']),
}
const TYPES: { readonly [d: string]: ElemType } = { float32: 'f32', int32: 'i32', bool: 'bool' }
const sizeOf = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)
/** Stored values of these types can be read (a stored bool's array type is the backend's business). */
const storable = (v: Var) => v.aval.dtype === 'float32' || v.aval.dtype === 'int32'
const literal = (t: ElemType, x: number) => (t === 'f32' ? Math.fround(x) : t === 'i32' ? castTo('int32', x) : x !== 0 ? 1 : 0)

/**
 * The expression computing stored `out` from buffers, or undefined when some part is outside
 * the subset (then the JS loop runs it). `bufSlot` gives the slot of a stored value.
 */
export function elementwiseExpr(out: Var, def: (v: Var) => Eqn | undefined, bufSlot: (v: Var) => number | undefined): ElemExpr | undefined {
  const e = elementwiseTree(out, def, bufSlot)
  return e && e.kind === 'op' && storable(out) ? e : undefined
}

/** Like elementwiseExpr for a value that need not be stored (a reduction's operand): may be a plain read. */
export function elementwiseTree(out: Var, def: (v: Var) => Eqn | undefined, bufSlot: (v: Var) => number | undefined): ElemExpr | undefined {
  const n = sizeOf(out)
  if (n < 4) return undefined
  const memo = new Map<number, ElemExpr | null>()
  const scalar = (v: Var): ElemExpr | undefined => {
    const type = TYPES[v.aval.dtype]
    if (!type || sizeOf(v) !== 1) return undefined
    const s = bufSlot(v)
    if (s !== undefined) return storable(v) ? { kind: 'scalar', slot: s, type } : undefined
    const d = def(v)
    if (d?.prim === 'full') return { kind: 'const', value: literal(type, d.params.value), type }
    if (d?.prim === 'reshape' || d?.prim === 'broadcast') return scalar(d.inputs[0]!)
    return undefined
  }
  /**
   * A stored vector `u` broadcast to `to` along leading axes only: its shape, leading 1s dropped,
   * is `to`'s trailing one, so element o of `to` reads u's element o % width. `to` may differ in
   * shape from `out` (the walk passes reshapes), never in element order.
   */
  const row = (u: Var, to: Var): ElemExpr | undefined => {
    let x = u
    while (bufSlot(x) === undefined) {
      const d = def(x)
      if (d?.prim !== 'reshape') return undefined
      x = d.inputs[0]!
    }
    const dims = u.aval.shape.slice(u.aval.shape.findIndex((a) => a !== 1))
    const tail = to.aval.shape.slice(to.aval.shape.length - dims.length)
    const width = sizeOf(u)
    if (!storable(x) || width < 2 || width > ROW_MAX || u.aval.shape.every((a) => a === 1) || dims.some((a, i) => a !== tail[i])) return undefined
    return { kind: 'row', slot: bufSlot(x)!, width, type: TYPES[x.aval.dtype]! }
  }
  /**
   * A broadcast of `u` to `to` along trailing axes only (u's shape is to's leading axes then 1s,
   * the broadcast axes spanning a power of two of at least 4 elements): u's expression with its
   * stored values read per row.
   */
  const perRow = (u: Var, to: Var): ElemExpr | undefined => {
    const [us, ts] = [u.aval.shape, to.aval.shape]
    if (us.length !== ts.length) return undefined
    let j = us.length
    while (j > 0 && us[j - 1] === 1) j--
    if (us.some((a, i) => i < j && a !== ts[i])) return undefined
    const inner = ts.slice(j).reduce((a, b) => a * b, 1)
    if (inner < 4 || (inner & (inner - 1)) !== 0) return undefined
    return walk(u, false, inner)
  }
  /**
   * v's expression, each element of v standing for `inner` consecutive output elements: 1 where
   * v has the output's size, more for a per-row value (its stored values then read per row). A
   * value's size fixes its `inner`, so its id keys the memo.
   */
  const walk = (v: Var, root: boolean, inner = 1): ElemExpr | undefined => {
    const type = TYPES[v.aval.dtype]
    if (!type || sizeOf(v) * inner !== n) return undefined
    if (!root) {
      const s = bufSlot(v)
      if (s !== undefined) return !storable(v) ? undefined : inner === 1 ? { kind: 'read', slot: s, type } : { kind: 'perRow', slot: s, inner, type }
    }
    const hit = memo.get(v.id)
    if (hit !== undefined) return hit ?? undefined
    const d = def(v)
    let r: ElemExpr | undefined
    if (!d) r = undefined
    else if (d.prim === 'full') r = { kind: 'const', value: literal(type, d.params.value), type }
    // a per-row value is broadcast from single values only
    else if (d.prim === 'broadcast') r = scalar(d.inputs[0]!) ?? (inner === 1 ? (row(d.inputs[0]!, v) ?? perRow(d.inputs[0]!, v)) : undefined)
    // same element count, row-major: element o of the reshape is element o of its operand
    else if (d.prim === 'reshape' || d.prim === 'stop_gradient') r = walk(d.inputs[0]!, false, inner)
    else if (d.prim === 'where') {
      const args = d.inputs.map((x) => walk(x, false, inner))
      r = args.every((a) => a !== undefined) && args[0]!.type === 'bool' ? { kind: 'op', prim: 'where', args: args as ElemExpr[], id: v.id, type } : undefined
    } else {
      const argType = TYPES[d.inputs[0]?.aval.dtype ?? '']
      if (argType && OPS[argType].has(d.prim)) {
        const args = d.inputs.map((x) => walk(x, false, inner))
        r = args.every((a) => a !== undefined) ? { kind: 'op', prim: d.prim as ElemOp, args: args as ElemExpr[], id: v.id, type } : undefined
      }
    }
    memo.set(v.id, r ?? null)
    return r
  }
  return walk(out, true)
}

/** Widest stored vector read as a repeated row (its tiles fill a chunk). */
const ROW_MAX = 8192

/** A stored per-row value as a kernel reads it: its slot and the output elements per value. */
export interface PerRowRead {
  readonly slot: number
  readonly inner: number
}

/** Slots the expressions read, whole, repeated rows, per row and single, in first-use order, with the type each is read as. */
export function elementwiseReads(es: readonly ElemExpr[]): { whole: number[]; single: number[]; rows: number[]; perRow: PerRowRead[]; width: number; types: Map<number, ElemType> } {
  const whole: number[] = [], single: number[] = [], rows: number[] = [], perRow: PerRowRead[] = []
  const types = new Map<number, ElemType>()
  let width = 1
  const seen = new Set<ElemExpr>()
  const go = (x: ElemExpr) => {
    if (seen.has(x)) return
    seen.add(x)
    if (x.kind !== 'op' && x.kind !== 'const') types.set(x.slot, x.type)
    if (x.kind === 'read' && !whole.includes(x.slot)) whole.push(x.slot)
    else if (x.kind === 'scalar' && !single.includes(x.slot)) single.push(x.slot)
    else if (x.kind === 'row' && !rows.includes(x.slot)) {
      rows.push(x.slot)
      width = lcm(width, x.width)
    } else if (x.kind === 'perRow') {
      if (!perRow.some((p) => p.slot === x.slot && p.inner === x.inner)) perRow.push({ slot: x.slot, inner: x.inner })
      width = lcm(width, x.inner)
    } else if (x.kind === 'op') x.args.forEach(go)
  }
  es.forEach(go)
  return { whole, single, rows, perRow, width, types }
}

/** The index of a per-row read among a kernel's per-row reads. */
export const perRowIndex = (reads: readonly PerRowRead[], x: { readonly slot: number; readonly inner: number }): number => reads.findIndex((p) => p.slot === x.slot && p.inner === x.inner)

/** The slots a group reads (its row sum's term included). */
export const groupReads = (g: ElemGroup) => elementwiseReads(g.rowSum ? [...g.exprs, g.rowSum.term] : g.exprs)

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))
export const lcm = (a: number, b: number) => (a / gcd(a, b)) * b

/** Elements per chunk of the elementwise kernels: 32 KiB per operand and output, so their memory stays in L2. */
export const CHUNK_ELEMS = 8192

/**
 * The chunk the elementwise kernels run on: whole multiples of `w` elements (rows, vectors) up to
 * CHUNK_ELEMS, at least one multiple and at most `n`; `padded` rounds it up to whole vectors.
 */
export function chunkOf(n: number, w: number): { chunk: number; padded: number } {
  const chunk = Math.min(n, Math.max(w, Math.floor(CHUNK_ELEMS / w) * w))
  return { chunk, padded: Math.ceil(chunk / 4) * 4 }
}

/** The operands a chunked kernel reads: whole arrays, repeated rows and single values, by slot. */
export interface ChunkedReads {
  readonly n: number
  readonly chunk: number
  readonly padded: number
  readonly whole: readonly number[]
  /** Repeated rows, each tiled over a `padded` region after the whole operands (filled once per call). */
  readonly rows: readonly number[]
  /** Per-row values: each chunk's are copied to a region of their own (chunks start at a row). */
  readonly perRow: readonly PerRowRead[]
  readonly single: readonly number[]
}

/**
 * A whole operand (its slot) that is a gather of whole rows of `table` (`d` rows of `inner`
 * elements, float32 or int32) by the int32 `index`: the pass copies the table into its memory
 * once a call and gathers each chunk's rows there, so the gathered array is never stored (a
 * residual quantizer's codes, read by its residual and its sum). `fail` reports an index outside
 * the table as the reference's gather does.
 */
export interface GatheredRead {
  readonly table: number
  readonly index: number
  readonly inner: number
  readonly d: number
  readonly fail: (B: readonly ArrayLike<number>[]) => never
}

/** Runs a group on the slots' arrays; `outs` are the group's outputs (the row sum's last, if any). */
export type ElemRun = (B: readonly ArrayLike<number>[], outs: readonly (Float32Array | Int32Array)[]) => void

/**
 * A loop's outputs (their slots) and the expressions computing them; later ones may read earlier
 * ones. With `rowSum`, the pass also sums `term` over consecutive runs of `width` elements into
 * slot `out` (a reduction over trailing axes whose operand is elementwise), in the reference's
 * order and precision: float32 terms added in float64 from +0 and rounded once, int32 terms
 * wrapping.
 */
export interface ElemGroup {
  readonly outs: readonly number[]
  readonly exprs: readonly ElemExpr[]
  readonly n: number
  readonly rowSum?: { readonly out: number; readonly term: ElemExpr; readonly width: number }
}

/**
 * Reads of the group's earlier outputs become those outputs' expressions (kept in registers),
 * themselves substituted (an output may read another one).
 */
export function substitute(e: ElemExpr, outs: ReadonlyMap<number, ElemExpr>, memo = new Map<ElemExpr, ElemExpr>()): ElemExpr {
  const hit = memo.get(e)
  if (hit) return hit
  let r: ElemExpr = e
  if (e.kind === 'read' && outs.has(e.slot)) r = substitute(outs.get(e.slot)!, outs, memo)
  else if (e.kind === 'op') {
    const args = e.args.map((a) => substitute(a, outs, memo))
    if (args.some((a, i) => a !== e.args[i])) r = { ...e, args }
  }
  memo.set(e, r)
  return r
}

/**
 * Merges elementwise loops of the same size into one pass where the order allows: a loop joins
 * the group opened by an earlier one when everything it reads exists at the group's position
 * (written before it, or by the group itself). Adam's three loops per parameter (moments and the
 * new parameter) become one pass reading the gradient once. `steps` is in run order; `reads` and
 * `writes` give a step's slots; `elem` says which steps are loops (with their expression).
 */
export function groupElementwise<S>(
  steps: readonly S[],
  writes: (s: S) => readonly number[] | undefined,
  elem: (s: S) => { out: number; expr: ElemExpr; n: number } | undefined,
): (S | ElemGroup)[] {
  const writtenAt = new Map<number, number>()
  const result: (S | { outs: number[]; exprs: ElemExpr[]; n: number; at: number; byOut: Map<number, ElemExpr>; reads: Set<number> })[] = []
  const open: { outs: number[]; exprs: ElemExpr[]; n: number; at: number; byOut: Map<number, ElemExpr>; reads: Set<number> }[] = []
  const groups = new Set<unknown>()
  steps.forEach((s, i) => {
    const e = elem(s)
    if (e) {
      const { whole, single, rows, perRow } = elementwiseReads([e.expr])
      const ready = (g: (typeof open)[number]) => [...whole, ...single, ...rows, ...perRow.map((p) => p.slot)].every((r) => g.byOut.has(r) || (writtenAt.get(r) ?? -1) < g.at)
      // only loops that share an operand (a parameter's gradient, or a group's output) join
      const shares = (g: (typeof open)[number]) => whole.some((r) => g.byOut.has(r) || g.reads.has(r))
      const g = open.find((x) => x.n === e.n && shares(x) && ready(x))
      if (g) {
        const expr = substitute(e.expr, g.byOut)
        g.outs.push(e.out)
        g.exprs.push(expr)
        g.byOut.set(e.out, expr)
        for (const r of whole) g.reads.add(r)
        writtenAt.set(e.out, g.at)
        return
      }
      const ng = { outs: [e.out], exprs: [e.expr], n: e.n, at: i, byOut: new Map([[e.out, e.expr]]), reads: new Set(whole) }
      open.push(ng)
      groups.add(ng)
      result.push(ng)
      writtenAt.set(e.out, i)
      return
    }
    const ws = writes(s)
    // a step whose writes are not known (a row chain) closes every group
    if (ws === undefined) open.length = 0
    else for (const w of ws) writtenAt.set(w, i)
    result.push(s)
  })
  return result.map((r) => (groups.has(r) ? { outs: (r as ElemGroup).outs, exprs: (r as ElemGroup).exprs, n: (r as ElemGroup).n } : r)) as (S | ElemGroup)[]
}

export { elementwiseSet } from './elem-kernel.js'
