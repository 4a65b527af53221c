import { Code, F32, I32, V128 } from './wasm/asm.js'
import { emitEpilogue, emitWiden, laneSelect, termLocals } from './nearest-epilogue.js'
import type { ScreenKernelSpec } from './nearest-screen.js'
import { SCREEN_STATE } from './nearest-screen.js'

/**
 * What screening left of each row (nearest-screen.ts), after a chunk's last column chunk: in
 * WebAssembly, each row's verdict (its answer when one candidate is left, else -1); in JS, for
 * the rows without one, their candidates or the decision to compute them whole in float32.
 */

const INF4 = [Infinity, Infinity, Infinity, Infinity]

/**
 * `verdicts(rows, row, sp, out)`: for a staged chunk's rows, their row terms at `row`, their
 * scales at sp (their bounds on the dot products chunk * 4 bytes after) and their screening state
 * at out, each row's verdict (int32, after the chunk's state). U is the least upper bound (a
 * bounded epilogue's from each lane's code with the least lower bound, below); U not finite or
 * NaN: -1; no lane's second lower bound at or below U, and exactly one lane's first: that lane's
 * column; else -1.
 */
export function verdictsCode(s: ScreenKernelSpec): Code {
  const c = new Code(4)
  const [rows, rowPtr, spPtr, outPtr] = [0, 1, 2, 3]
  const r = c.local(I32), rp = c.local(I32), sp = c.local(I32), op = c.local(I32), vp = c.local(I32), m = c.local(I32), okRow = c.local(I32)
  const uMin = c.local(F32)
  const u = c.local(V128), b1 = c.local(V128), i1 = c.local(V128), b2 = c.local(V128), tb = c.local(V128), err = c.local(V128), t = c.local(V128)
  const rowVals = s.rowTerms.map(() => c.local(V128))
  const colVals = s.colTerms.map(() => c.local(V128))
  const st = (which: number) => which * 16
  c.get(rowPtr).set(rp)
  c.get(spPtr).set(sp)
  c.get(outPtr).set(op)
  c.get(outPtr).i32(s.chunk * SCREEN_STATE).i32Add().set(vp)
  c.i32(0).set(r)
  c.loop()
  c.get(op).vLoad(st(1)).set(b1)
  c.get(op).vLoad(st(2)).set(i1)
  c.get(op).vLoad(st(3)).set(b2)
  if (s.range === undefined) c.get(op).vLoad(st(0)).set(u)
  else {
    rowVals.forEach((val, ri) => c.get(rp).vLoad32Splat(ri * s.chunk * 4).set(val))
    c.get(sp).vLoad32Splat(s.chunk * 4).set(err)
    c.get(op).vLoad(st(4)).set(tb)
    emitBoundedU(c, s, { rowVals, colVals, err, sp, op, b1, i1, tb, u, t, okRow, lim: c.local(F32), mapped: c.local(F32), next: c.local(F32) })
  }
  c.block()
  c.block()
  c.get(u).f32x4ExtractLane(0).get(u).f32x4ExtractLane(1).f32Min().get(u).f32x4ExtractLane(2).get(u).f32x4ExtractLane(3).f32Min().f32Min().tee(uMin)
  c.f32(Infinity).f32Lt().i32Eqz().brIf(0)
  c.get(b2).get(uMin).f32x4Splat().f32x4Le().vAnyTrue().brIf(0)
  c.get(b1).get(uMin).f32x4Splat().f32x4Le().i32x4Bitmask().tee(m).i32Popcnt().i32(1).i32Ne().brIf(0)
  c.get(vp).get(op).get(m).i32Ctz().i32(4).i32Mul().i32Add().i32Load(st(2)).i32Store(0)
  c.br(1)
  c.end()
  c.get(vp).i32(-1).i32Store(0)
  c.end()
  c.get(rp).i32(4).i32Add().set(rp)
  c.get(sp).i32(4).i32Add().set(sp)
  c.get(vp).i32(4).i32Add().set(vp)
  c.get(op).i32(SCREEN_STATE).i32Add().set(op)
  c.get(r).i32(1).i32Add().tee(r).get(rows).i32LtU().brIf(0)
  c.end()
  return c
}

interface BoundedLocals {
  readonly rowVals: readonly number[]
  readonly colVals: readonly number[]
  readonly err: number
  readonly sp: number
  readonly op: number
  readonly b1: number
  readonly i1: number
  readonly tb: number
  readonly u: number
  readonly t: number
  readonly okRow: number
  /** Scalar scratch (float32) for the tail's widening of U. */
  readonly lim: number
  readonly mapped: number
  readonly next: number
}

/**
 * A bounded epilogue's U (nearest-screen.ts screenRangeExp) for the row whose state is at `op`:
 * the least of each lane's upper bound for its code with the least lower bound (the epilogue at
 * that code's dot product, kept in tb, plus or minus err, with its column terms gathered), +Inf
 * for a lane whose columns were all padding. Any code's upper bound is at least the least
 * distance, so this U is one. NaN (the row in float32) when a row term, or the bound on the row's
 * dot products, is not within 2^range. Stored as the row's U and left in `u`.
 */
function emitBoundedU(c: Code, s: ScreenKernelSpec, v: BoundedLocals): void {
  const lim = 2 ** s.range!
  c.i32(1)
  for (const val of v.rowVals) c.get(val).f32x4ExtractLane(0).f32Abs().f32(lim).f32Le().i32And()
  // |dot| is at most the integer bound times the row's scale, plus err (rounded: half the limit)
  c.i32(s.info).f32Load(24).get(v.sp).f32Load(0).f32Mul().get(v.err).f32x4ExtractLane(0).f32Add().f32(lim / 2).f32Le().i32And()
  c.set(v.okRow)
  v.colVals.forEach((val, ci) => {
    c.vConstF32([0, 0, 0, 0])
    for (let l = 0; l < 4; l++) c.get(v.i1).i32x4ExtractLane(l).i32(4).i32Mul().f32Load(s.col + ci * s.npad * 4).f32x4ReplaceLane(l)
    c.set(val)
  })
  const term = termLocals(c, s.rowTerms, s.colTerms, (ri) => v.rowVals[ri]!, v.colVals)
  emitEpilogue(c, s.epi, () => (s.slope === 1 ? c.get(v.tb).get(v.err).f32x4Add() : c.get(v.tb).get(v.err).f32x4Sub()), term)
  c.set(v.t)
  c.vConstF32(INF4).get(v.t).get(v.b1).vConstF32(INF4).f32x4Eq()
  laneSelect(c, s.relaxed).set(v.u)
  c.block()
  c.get(v.okRow).brIf(0)
  c.vConstI32([-1, -1, -1, -1]).set(v.u)
  c.end()
  if (s.tail.length > 0) emitTailLimit(c, s, v)
  c.get(v.op).get(v.u).vStore(0)
}

/**
 * U widened through the tail (nearest-screen.ts liftTail): the least U of the lanes, stepped up
 * one float32 at a time while the tail maps the next value where it maps U (a few steps: a
 * square root maps about two adjacent floats to each), in every lane of `u`. A code whose lower
 * bound is above it has a tail value above U's, so above the least distance. NaN (the row in
 * float32) where U is NaN or negative (a square root of a negative distance is NaN, and a NaN
 * distance wins).
 */
function emitTailLimit(c: Code, s: ScreenKernelSpec, v: BoundedLocals): void {
  c.get(v.u).f32x4ExtractLane(0).get(v.u).f32x4ExtractLane(1).f32Min().get(v.u).f32x4ExtractLane(2).get(v.u).f32x4ExtractLane(3).f32Min().f32Min().set(v.lim)
  c.block() // done
  c.block() // not a limit: NaN
  c.get(v.lim).f32(0).f32Ge().i32Eqz().brIf(0)
  emitWiden(c, s.tail, v.lim, v.mapped, v.next)
  c.br(1)
  c.end()
  c.f32(NaN).set(v.lim)
  c.end()
  c.get(v.lim).f32x4Splat().set(v.u)
}

/**
 * Reads one row's screening state (at element `base` of the memory's float and int views): -1
 * when the whole row must be computed in float32, else the number of candidate columns (1 to 4,
 * one per lane) written to `cols`. One candidate is the answer. Allocates nothing: it runs for
 * every row without a verdict.
 */
export function screenVerdict(f32: Float32Array, i32: Int32Array, base: number, cols: Int32Array): number {
  // a NaN U (a NaN bound in its lane) makes the minimum NaN
  const u = Math.min(f32[base]!, f32[base + 1]!, f32[base + 2]!, f32[base + 3]!)
  if (!(u < Infinity)) return -1
  let count = 0
  for (let l = 0; l < 4; l++) {
    if (f32[base + 12 + l]! <= u) return -1
    if (f32[base + 4 + l]! <= u) cols[count++] = i32[base + 8 + l]!
  }
  return count
}
