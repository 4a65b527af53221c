import type { Eqn, NearestPattern, ScheduleStep, Var } from '@tessera/core'
import { nearestDims } from '@tessera/core'
import type { Code } from './wasm/asm.js'
import { I32 } from './wasm/asm.js'
import { ChainCode, F64 } from './wasm/simd-ops.js'

/**
 * Row terms a screened nearest-code step computes itself: `sum(a * a)` over the last axis of its
 * own rows `a` (|x|² of a squared euclidean distance), read by nothing but the distance. The step
 * that would store them is dropped: the screening kernel sums each staged chunk's rows on the
 * thread that screens it (in parallel, on rows already in cache), and the calling thread sums the
 * rows it stages for the float32 kernel. Both add the float32 squares in order in a float64 and
 * round once, as the reference's sum (and the stored term's loop) does, so the values are the same.
 */
export interface RowSquareFolds {
  /** The pattern's terms (indices into its terms) that its step computes from its rows. */
  termsOf(p: NearestPattern): readonly number[]
  /** Whether a step stored such a term (its side outputs, if any, are then computed on their own). */
  dropped(st: ScheduleStep): boolean
}

export const NO_ROW_SQUARES: RowSquareFolds = { termsOf: () => [], dropped: () => false }

interface Graph {
  def(v: Var): Eqn | undefined
  uses(v: Var): readonly Eqn[]
  isOutput(v: Var): boolean
}

/**
 * The folds of the nearest steps that `screened` says are screened. A sum stored with side
 * outputs (residual VQ's next residual) is dropped only where `sidesApart` says the plan computes
 * those on their own.
 */
export function rowSquareFolds(
  steps: readonly ScheduleStep[],
  g: Graph,
  screened: (p: NearestPattern) => boolean,
  sidesApart: (sides: readonly Var[]) => boolean,
): RowSquareFolds {
  const reduces = new Map<Eqn, ScheduleStep>()
  for (const st of steps) if (st.kind === 'reduce' && (st.sides.length === 0 || sidesApart(st.sides))) reduces.set(st.eqn, st)
  const drop = new Set<ScheduleStep>()
  const terms = new Map<NearestPattern, number[]>()
  const readOnce = (v: Var) => g.uses(v).length === 1 && !g.isOutput(v)
  for (const st of steps) {
    if (st.kind !== 'nearest' || !screened(st.pattern)) continue
    const a = st.pattern.matmul.inputs[0]!
    const ra = a.aval.shape.length
    // rows [m, k], or [1, ..., m, k] (one codebook's batch axes)
    if (a.aval.dtype !== 'float32' || ra < 2 || a.aval.shape.slice(0, -2).some((d) => d !== 1)) continue
    // |x|² with keepdims, broadcast along the codes: reshapes and broadcasts of the sum, each of
    // shape [m], [m, 1] or [m, n] after leading 1s, so row i stays row i
    const m = a.aval.shape[ra - 2]!, n = nearestDims(st.pattern).n
    const rowShaped = (x: Var) => {
      const s = x.aval.shape
      const endsIn = (t: readonly number[]) => s.length >= t.length && t.every((d, i) => s[s.length - t.length + i] === d) && s.slice(0, s.length - t.length).every((d) => d === 1)
      return endsIn([m]) || endsIn([m, 1]) || endsIn([m, n])
    }
    const mine: number[] = []
    st.pattern.terms.forEach((t, i) => {
      if (t.dep !== 'row') return
      let v = t.v
      if (!readOnce(v)) return
      while (g.def(v)?.prim === 'reshape' || g.def(v)?.prim === 'broadcast') {
        if (!rowShaped(v)) return
        v = g.def(v)!.inputs[0]!
        if (!readOnce(v)) return
      }
      const sum = g.def(v)
      const rs = sum && reduces.get(sum)
      if (!sum || !rs || sum.prim !== 'reduce_sum' || sum.params.axes.length !== 1 || sum.params.axes[0] !== ra - 1) return
      const sq = g.def(sum.inputs[0]!)
      if (sq?.prim !== 'mul' || sq.inputs[0] !== a || sq.inputs[1] !== a) return
      drop.add(rs)
      mine.push(i)
    })
    if (mine.length > 0) terms.set(st.pattern, mine)
  }
  return { termsOf: (p) => terms.get(p) ?? [], dropped: (st) => drop.has(st) }
}

/**
 * `rowSquares(rows, a, out)`: for rows of k float32 at byte address a, each row's sum of
 * squares (float32 squares added in order in a float64, rounded once) as a float32 at out. Two
 * rows at a time: two independent chains of float64 adds.
 */
export function rowSquaresCode(k: number): Code {
  const c = new ChainCode(3)
  const [rows, aPtr, out] = [0, 1, 2]
  const r = c.local(I32), p = c.local(I32), q = c.local(I32), j = c.local(I32), o = c.local(I32)
  const s = c.local(F64), t = c.local(F64)
  // the rows at ptrs[i] (k floats apart, so p ends at the row after them) into out[o + i]
  const sums = (ptrs: readonly number[], accs: readonly number[]) => {
    accs.forEach((acc) => c.f64Const(0).set(acc))
    if (ptrs.length > 1) c.get(p).i32(k * 4).i32Add().set(ptrs[1]!)
    c.i32(0).set(j)
    c.loop()
    ptrs.forEach((ptr, i) => {
      c.get(accs[i]!).get(ptr).f32Load(0).get(ptr).f32Load(0).f32Mul().f64PromoteF32().f64Add().set(accs[i]!)
      c.get(ptr).i32(4).i32Add().set(ptr)
    })
    c.get(j).i32(1).i32Add().tee(j).i32(k).i32LtU().brIf(0)
    c.end()
    accs.forEach((acc, i) => c.get(o).get(acc).f32DemoteF64().f32Store(4 * i))
    if (ptrs.length > 1) c.get(ptrs[1]!).set(p)
  }
  c.get(aPtr).set(p)
  c.get(out).set(o)
  c.i32(0).set(r)
  c.block()
  c.loop() // pairs of rows
  c.get(r).i32(1).i32Add().get(rows).i32LtU().i32Eqz().brIf(1)
  sums([p, q], [s, t])
  c.get(o).i32(8).i32Add().set(o)
  c.get(r).i32(2).i32Add().set(r)
  c.br(0)
  c.end()
  c.end()
  // an odd last row
  c.block()
  c.get(r).get(rows).i32LtU().i32Eqz().brIf(0)
  sums([p], [s])
  c.end()
  return c
}

/**
 * The same sums in JS, for rows the calling thread stages for the float32 kernel: rows r0 ..
 * r0 + cnt of `a` (k floats each; of the rows listed in `only`, if given) into dst from `at` on.
 */
export function rowSquaresJs(a: Float32Array, k: number, r0: number, cnt: number, only: Int32Array | undefined, dst: Float32Array, at: number): void {
  for (let q = 0; q < cnt; q++) {
    const base = (only ? only[r0 + q]! : r0 + q) * k
    let s = 0
    for (let j = 0; j < k; j++) {
      const x = a[base + j]!
      s += Math.fround(x * x)
    }
    dst[at + q] = s
  }
}
