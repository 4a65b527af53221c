import type { Epilogue } from '@tessera/core'
import { Code, V128, I32 } from './wasm/asm.js'
import { emitEpilogue, laneSelect, termLocals } from './nearest-epilogue.js'
import { affineRowScale, emitAffineStep } from './nearest-affine.js'

/**
 * Screening for the nearest-code kernel (nearest.ts): dot products in int16 (one pmaddwd per
 * 8 multiply-adds), turned into bounds on each float32 distance, so that only the codes those
 * bounds cannot rule out are computed in float32. The indices are those of the float32 kernel,
 * bit for bit; screening only decides which distances need computing.
 *
 * Why the bounds hold: each row and the codebook are scaled by powers of two and rounded to
 * integers (nearest-scale.ts), so the integer dot product times the scales is within a known `err` of
 * the float32 kernel's dot product (rounding of the operands, plus the float32 kernel's own
 * rounding of a k-term sum, plus this kernel's conversion and its own subtraction). The epilogue
 * is monotone in the dot product (NearestPattern.slope) and float32 rounding is monotone, so the
 * distance lies between the epilogue at dot - err and at dot + err, through the same float32 ops.
 * For each row the kernel keeps the least upper bound U (a bounded epilogue's, screenRangeExp,
 * from its lanes' best codes after the last column chunk), and per lane the two least lower
 * bounds and the index of the first. A code whose lower bound is above U cannot win or tie. When
 * at most one code per lane has its lower bound at or below U, those codes are the only
 * candidates (one: it is the answer; more: their column chunks are computed in float32);
 * otherwise, or when a bound is NaN (a NaN distance, or a row that could not be scaled), the
 * whole row is computed in float32.
 */

/**
 * Bytes of screening state per row: U, least lower bound, its column, second lower bound, and
 * (bounded epilogues, below) the dot product at the least lower bound (4 lanes each). A NaN bound
 * makes U NaN (all bits set), and U stays NaN: pmin keeps its first operand when a comparison
 * with NaN is false.
 */
export const SCREEN_STATE = 5 * 16

/**
 * Bounded epilogues: those of adds, subtracts, products, negations, absolute values, maxima and
 * minima (no sqrt, no division) whose dot product and terms are all within 2^E. Then no distance
 * can be infinite or NaN, so the kernel computes only each code's lower bound, and U once per row
 * from the upper bounds of the codes with each lane's least lower bound (any code's upper bound is
 * at least the least distance): a third fewer operations per distance than both bounds and a NaN
 * check. This is E: the largest (at most 62) with every intermediate below 2^126 when each leaf
 * is within 2^E, or undefined for other epilogues (or E below 8).
 */
export function screenRangeExp(epi: Epilogue): number | undefined {
  // log2 of a bound on |value| when every leaf is within 2^e
  const bound = (x: Epilogue, e: number): number => {
    switch (x.op) {
      case 'dot':
      case 'term':
        return e
      case 'neg':
      case 'abs':
        return bound(x.a, e)
      case 'sqrt':
      case 'div':
        return Infinity
      case 'mul':
        return bound(x.a, e) + bound(x.b, e)
      default:
        return Math.max(bound(x.a, e), bound(x.b, e)) + 1
    }
  }
  for (let e = 62; e >= 8; e--) if (bound(epi, e) <= 126) return e
  return undefined
}

/** A unary op applied to a screened epilogue's result (liftTail), innermost first. */
export type TailOp = 'sqrt' | 'neg'

/**
 * An epilogue split into the part the bounds are computed on and a tail of square roots and
 * pairs of negations applied to its result, which is non-decreasing (VectorQuantize's
 * argmax of -sqrt(max(d, eps)) is the argmin of neg(neg(sqrt(max(d, eps))))). A square root makes
 * an epilogue unbounded (screenRangeExp), so screening on the part before it keeps one bound per
 * distance and no square root per distance. The tail can map distinct values to one float32
 * (a tie, which the first index wins), so the verdicts widen U to the largest value it maps
 * where it maps U (nearest-verdicts.ts); a code above that has a larger distance.
 */
export function liftTail(epi: Epilogue): { readonly inner: Epilogue; readonly tail: readonly TailOp[] } {
  const tail: TailOp[] = []
  for (let e = epi; ; ) {
    if (e.op === 'neg' && e.a.op === 'neg') {
      tail.unshift('neg', 'neg')
      e = e.a.a
    } else if (e.op === 'sqrt') {
      tail.unshift('sqrt')
      e = e.a
    } else return { inner: e, tail }
  }
}

/**
 * Bytes of per-row verdicts after a chunk's screening state (int32: the answer when screening left
 * one candidate, else -1: the caller reads the state), before the int16 panel.
 */
export const screenVerdictBytes = (chunk: number): number => chunk * 4

/** Bytes after a chunk's int16 panel where the kernel parks the accumulators of all rows but a tile's first. */
export const screenParkBytes = (rows: number, vecs: number): number => (rows - 1) * vecs * 16

export interface ScreenKernelSpec {
  readonly k2: number
  readonly n: number
  readonly npad: number
  /** Registers: rows per tile and 4-lane column vectors per tile (cw = 4 * vecs columns per chunk). */
  readonly rows: number
  readonly vecs: number
  /** Rows per staged chunk (the stride of the row terms and of the scales and bounds). */
  readonly chunk: number
  /** Byte address of the column terms (npad floats per term); the float32 panels [npad/cw][k][cw] are at 0. */
  readonly col: number
  readonly k: number
  /** The epilogue the bounds are computed on: the pattern's, or its part before `tail` (liftTail). */
  readonly epi: Epilogue
  /** The ops after `epi` in the pattern's epilogue (bounded epilogues only; usually none). */
  readonly tail: readonly TailOp[]
  readonly slope: 1 | -1
  /** The epilogue's term numbers that are row terms, and those that are column terms, in memory order (as the float32 kernel's). */
  readonly rowTerms: readonly number[]
  readonly colTerms: readonly number[]
  readonly relaxed: boolean
  /** Byte offset of the int16 rows from the float32 rows they are scaled from (same buffer), and the row scaling's function index. */
  readonly qaOffset: number
  readonly scaleRowsFn: number
  /** The panel scaling's function index; its int16 panel goes right after the chunk's screening state, and the parked accumulators (screenParkBytes) after the panel. */
  readonly panelScaleFn: number
  /** Row terms (positions in rowTerms) the kernel sums from the rows (nearest-terms.ts), and that function's index. */
  readonly selfSquares: readonly number[]
  readonly rowSquaresFn: number
  /** The verdicts function's index (nearest-verdicts.ts). */
  readonly verdictsFn: number
  /** Byte address of the codebook's scaling values (nearest-scale.ts INFO_BYTES). */
  readonly info: number
  /** screenRangeExp of a bounded epilogue (the caller has checked the column terms against it), else undefined. */
  readonly range: number | undefined
  /** Affine screening (nearest-affine.ts), when the epilogue is affine: its column values' byte address, its per-call constants', its verdicts function's index. */
  readonly affine?: { readonly at: number; readonly info: number; readonly verdictsFn: number }
}

/**
 * `screen(rows, qa, row, out, from, to)`: for a staged chunk's int16 rows at qa (k2 pairs each;
 * their scales at qa + chunk * k2 * 4, their bounds chunk * 4 bytes after), its row terms at
 * row and its screening state at out (then the rows' verdicts), the columns [from, to)
 * (multiples of cw). When from is 0 the rows are first scaled from their float32 copy and the
 * state is initialized; the call that ends at the last column chunk has the verdicts written
 * (nearest-verdicts.ts). Same
 * loops as the float32 kernel, with k2 steps of pairs.
 */
export function screenKernelCode(s: ScreenKernelSpec, affine = false): Code {
  const { k2, n, npad, rows: R, vecs: V, chunk } = s
  const aff = affine ? s.affine : undefined
  if (affine && !aff) throw new Error('affine screening without its addresses')
  const CW = 4 * V
  const c = new Code(6)
  const [rows, aPtr, rowPtr, outPtr, from, to] = [0, 1, 2, 3, 4, 5]
  const p = c.local(I32), end = c.local(I32), col = c.local(I32), bp = c.local(I32), fp = c.local(I32)
  const ap = c.local(I32), rp = c.local(I32), op = c.local(I32), sp = c.local(I32)
  const da = c.local(I32), db = c.local(I32), dEnd = c.local(I32)
  const jv = c.local(V128), bv = c.local(V128), dl = c.local(V128), dh = c.local(V128), lo = c.local(V128), hi = c.local(V128), t = c.local(V128)
  const b1 = c.local(V128), b2 = c.local(V128), i1 = c.local(V128), u = c.local(V128), less = c.local(V128)
  const sv = Array.from({ length: R }, () => c.local(V128))
  const acc = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
  // one row's values at a time in the epilogue: with every row's live at once (and the column
  // indices kept across the dot loop) more vectors are live than x86 has registers, and TurboFan spills
  const scl = c.local(V128), err = c.local(V128), av = c.local(V128)
  const rowVals = s.rowTerms.map(() => c.local(V128))
  const colVals = s.colTerms.map(() => c.local(V128))
  const bounded = s.range !== undefined
  const tb = c.local(V128)
  const INF4 = [Infinity, Infinity, Infinity, Infinity]
  const NEG_INF4 = [-Infinity, -Infinity, -Infinity, -Infinity]
  const mask = n % CW !== 0
  const select = () => laneSelect(c, s.relaxed)
  const st = (which: number) => which * 16

  c.get(outPtr).get(rows).i32(SCREEN_STATE).i32Mul().i32Add().set(end)
  c.block()
  c.get(from).brIf(0)
  // a chunk's first call sums the squares of its rows where a row term is that, and scales them
  // (on the thread that screens them)
  for (const ri of s.selfSquares) c.get(rows).get(aPtr).i32(-s.qaOffset).i32Add().get(rowPtr).i32(ri * chunk * 4).i32Add().call(s.rowSquaresFn)
  c.get(rows).get(aPtr).i32(-s.qaOffset).i32Add().get(aPtr).call(s.scaleRowsFn)
  c.get(outPtr).set(p)
  c.loop()
  // affine: the largest s per lane and the second (from -Inf); else the least lower bounds
  const start = aff ? NEG_INF4 : INF4
  c.get(p).vConstF32(INF4).vStore(st(0))
  c.get(p).vConstF32(start).vStore(st(1))
  c.get(p).vConstI32([0, 0, 0, 0]).vStore(st(2))
  c.get(p).vConstF32(start).vStore(st(3))
  c.get(p).vConstF32([0, 0, 0, 0]).vStore(st(4))
  c.get(p).i32(SCREEN_STATE).i32Add().tee(p).get(end).i32LtU().brIf(0)
  c.end()
  c.end()

  c.get(from).i32x4Splat().vConstI32([0, 1, 2, 3]).i32x4Add().set(jv)
  c.get(from).i32(4).i32Mul().set(col)
  c.get(from).i32(s.k * 4).i32Mul().set(fp)
  // the column chunk's int16 panel: a scratch after the chunk's screening state and verdicts
  c.get(outPtr).i32(chunk * SCREEN_STATE + screenVerdictBytes(chunk)).i32Add().set(bp)
  c.loop() // column chunks
  c.get(fp).get(bp).call(s.panelScaleFn)
  c.get(aPtr).set(ap)
  c.get(rowPtr).set(rp)
  c.get(outPtr).set(op)
  c.get(aPtr).i32(chunk * k2 * 4).i32Add().set(sp)
  c.loop() // row blocks
  for (let r = 0; r < R; r++) for (let v = 0; v < V; v++) c.vConstI32([0, 0, 0, 0]).set(acc[r]![v]!)
  c.get(ap).set(da)
  c.get(bp).set(db)
  c.get(ap).i32(k2 * 4).i32Add().set(dEnd)
  c.loop() // pairs along k
  for (let r = 0; r < R; r++) c.get(da).vLoad32Splat(r * k2 * 4).set(sv[r]!)
  for (let v = 0; v < V; v++) {
    c.get(db).vLoad(v * 16).set(bv)
    for (let r = 0; r < R; r++) c.get(acc[r]![v]!).get(sv[r]!).get(bv).i32x4DotI16x8S().i32x4Add().set(acc[r]![v]!)
  }
  c.get(db).i32(CW * 4).i32Add().set(db)
  c.get(da).i32(4).i32Add().tee(da).get(dEnd).i32LtU().brIf(0)
  c.end()
  // db is now the end of the panel: the parking space for the accumulators of rows 1..R-1
  for (let r = 1; r < R; r++) for (let v = 0; v < V; v++) c.get(db).get(acc[r]![v]!).vStore(((r - 1) * V + v) * 16)
  for (let r = 0; r < R; r++) {
    const at = (w: number) => r * SCREEN_STATE + st(w)
    if (aff) {
      affineRowScale(c, scl, () => c.get(sp).i32(r * 4).i32Add(), aff.info)
      c.get(op).vLoad(at(1)).set(b1)
      c.get(op).vLoad(at(2)).set(i1)
      c.get(op).vLoad(at(3)).set(b2)
      for (let v = 0; v < V; v++) {
        if (r === 0) c.get(acc[0]![v]!).set(av)
        else c.get(db).vLoad(((r - 1) * V + v) * 16).set(av)
        emitAffineStep(c, s.relaxed, { acc: av, scale: scl, b1, b2, i1, s: lo, less }, () => c.get(col).vLoad(aff.at + v * 16),
          () => c.get(jv).vConstI32([v * 4, v * 4, v * 4, v * 4]).i32x4Add(), select)
      }
      c.get(op).get(b1).vStore(at(1))
      c.get(op).get(i1).vStore(at(2))
      c.get(op).get(b2).vStore(at(3))
      continue
    }
    rowVals.forEach((val, ri) => c.get(rp).vLoad32Splat(ri * chunk * 4 + r * 4).set(val))
    c.get(sp).vLoad32Splat(r * 4).set(scl)
    c.get(sp).vLoad32Splat(chunk * 4 + r * 4).set(err)
    if (!bounded) c.get(op).vLoad(at(0)).set(u)
    c.get(op).vLoad(at(1)).set(b1)
    c.get(op).vLoad(at(2)).set(i1)
    c.get(op).vLoad(at(3)).set(b2)
    if (bounded) c.get(op).vLoad(at(4)).set(tb)
    for (let v = 0; v < V; v++) {
      const cidx = () => c.get(jv).vConstI32([v * 4, v * 4, v * 4, v * 4]).i32x4Add()
      if (r === 0) c.get(acc[0]![v]!).set(av)
      else c.get(db).vLoad(((r - 1) * V + v) * 16).set(av)
      // the dot product's bounds, then the epilogue at each (float32 ops, as the exact kernel's)
      c.get(av).f32x4ConvertI32x4S().get(scl).f32x4Mul().set(t)
      if (!bounded || s.slope === 1) c.get(t).get(err).f32x4Sub().set(dl)
      if (!bounded || s.slope === -1) c.get(t).get(err).f32x4Add().set(dh)
      // each column term loaded once for both bounds (TurboFan does not merge the two loads)
      colVals.forEach((val, ci) => c.get(col).vLoad(s.col + ci * npad * 4 + v * 16).set(val))
      const term = termLocals(c, s.rowTerms, s.colTerms, (ri) => rowVals[ri]!, colVals)
      emitEpilogue(c, s.epi, () => c.get(s.slope === 1 ? dl : dh), term)
      c.set(lo)
      if (!bounded) {
        emitEpilogue(c, s.epi, () => c.get(s.slope === 1 ? dh : dl), term)
        c.set(hi)
      }
      if (mask) {
        // padding columns: bounds +Inf, never a candidate while U is finite
        for (const b of bounded ? [lo] : [lo, hi]) {
          c.get(b).vConstF32(INF4)
          cidx().vConstI32([n, n, n, n]).i32x4LtS()
          select().set(b)
        }
      }
      // two least lower bounds per lane, the first one's column, and the least upper bound
      c.get(b2).get(b1).get(lo).f32x4Pmax().f32x4Pmin().set(b2)
      c.get(lo).get(b1).f32x4Lt().set(less)
      c.get(b1).get(lo).f32x4Pmin().set(b1)
      cidx().get(i1).get(less)
      select().set(i1)
      if (bounded) {
        c.get(t).get(tb).get(less)
        select().set(tb)
        continue
      }
      // NaN in either bound (lo + hi is NaN then; also for -Inf + Inf, which only costs a float32
      // row) sets all of U's bits: U is NaN from then on
      c.get(u).get(hi).f32x4Pmin()
      c.get(lo).get(hi).f32x4Add().tee(t).get(t).f32x4Ne().vOr().set(u)
    }
    if (!bounded) c.get(op).get(u).vStore(at(0))
    c.get(op).get(b1).vStore(at(1))
    c.get(op).get(i1).vStore(at(2))
    c.get(op).get(b2).vStore(at(3))
    if (bounded) c.get(op).get(tb).vStore(at(4))
  }
  c.get(ap).i32(R * k2 * 4).i32Add().set(ap)
  c.get(rp).i32(R * 4).i32Add().set(rp)
  c.get(sp).i32(R * 4).i32Add().set(sp)
  c.get(op).i32(R * SCREEN_STATE).i32Add().tee(op).get(end).i32LtU().brIf(0)
  c.end() // row blocks
  c.get(jv).vConstI32([CW, CW, CW, CW]).i32x4Add().set(jv)
  c.get(fp).i32(s.k * CW * 4).i32Add().set(fp)
  c.get(col).i32(CW * 4).i32Add().tee(col).get(to).i32(4).i32Mul().i32LtU().brIf(0)
  c.end() // column chunks
  // the call that ends at the last column chunk writes the rows' verdicts (a function of its own:
  // in the row-block loop, even behind a branch, its code made TurboFan spill more there)
  c.block()
  c.get(to).i32(npad).i32Ne().brIf(0)
  c.get(rows).get(rowPtr).get(aPtr).i32(chunk * k2 * 4).i32Add().get(outPtr).call(aff ? aff.verdictsFn : s.verdictsFn)
  c.end()
  return c
}

/** Whether `count` rows of n terms (npad apart, from element `at`) are all within 2^range in magnitude (NaN is not); true without a range. */
export function termsInRange(f32: Float32Array, at: number, count: number, n: number, npad: number, range: number | undefined): boolean {
  if (range === undefined) return true
  const lim = 2 ** range
  for (let t = 0; t < count; t++) {
    for (let j = 0; j < n; j++) if (!(Math.abs(f32[at + t * npad + j]!) <= lim)) return false
  }
  return true
}

/** The screening module's functions, in order: `call` takes these indices. */
export const SCREEN_FNS = ['run', 'exact', 'screen', 'scaleRows', 'stats', 'panelScale', 'verdicts', 'rowSquares', 'screenAffine', 'verdictsAffine'] as const
export const fnIndex = (name: (typeof SCREEN_FNS)[number]): number => SCREEN_FNS.indexOf(name)

/** Set in `rows` to run the float32 kernel instead of screening (see dispatchCode). */
export const EXACT_FLAG = 1 << 30

/** Set in `rows` to screen with the affine kernel (nearest-affine.ts; modules built with it). */
export const AFFINE_FLAG = 1 << 29
/** The row count's bits of `rows`, below the flags. */
export const ROWS_MASK = AFFINE_FLAG - 1

/** `run(rows, ...)`: the float32 kernel when rows has EXACT_FLAG, else screening (affine with AFFINE_FLAG, where the module has it). */
export function dispatchCode(affine: boolean): Code {
  const c = new Code(6)
  const call = (fn: (typeof SCREEN_FNS)[number], mask: number) => {
    c.get(0).i32(mask).i32And()
    for (let i = 1; i < 6; i++) c.get(i)
    c.call(fnIndex(fn))
  }
  c.block()
  c.block()
  c.get(0).i32(EXACT_FLAG).i32And().brIf(0)
  if (affine) {
    c.block()
    c.get(0).i32(AFFINE_FLAG).i32And().i32Eqz().brIf(0)
    call('screenAffine', ROWS_MASK)
    c.br(2)
    c.end()
  }
  call('screen', ROWS_MASK)
  c.br(1)
  c.end()
  call('exact', ROWS_MASK)
  c.end()
  return c
}
