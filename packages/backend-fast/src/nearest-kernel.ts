import type { Epilogue } from '@tessera/core'
import { Code, V128, I32 } from './wasm/asm.js'
import { emitEpilogue, laneSelect, termLocals } from './nearest-epilogue.js'
import { ROWS_MASK } from './nearest-screen.js'

/** What the float32 kernel is specialized to (nearest.ts's geometry). */
export interface ExactKernelSpec {
  readonly k: number
  readonly n: number
  readonly npad: number
  /** Columns per chunk (4 * vecs), steps along k per dot-loop iteration, rows per staged chunk. */
  readonly cw: number
  readonly unroll: number
  readonly chunk: number
  readonly rows: number
  readonly vecs: number
  readonly relaxed: boolean
  /** Byte address of the column terms (npad floats per term). */
  readonly col: number
  readonly epi: Epilogue
  /** The epilogue's term numbers that are row terms, and those that are column terms, in memory order. */
  readonly rowTerms: readonly number[]
  readonly colTerms: readonly number[]
}

/**
 * The SIMD kernel for one staged chunk of rows and the columns [from, to): per-lane argmin state
 * initialized for every row (when from is 0), then for each column chunk (its packed B panel
 * stays in L1) every block of `rows` rows (the chunk's A rows stay in L2): a register-tiled dot
 * loop, the epilogue, and the state update. Calls over consecutive column ranges give the same
 * state as one call over all columns.
 */
export function exactKernelCode(s: ExactKernelSpec): Code {
  const { k, n, cw: CW, npad, unroll: U, chunk, rows: R, vecs: V, relaxed } = s
  const c = new Code(6)
  // padded row count; byte addresses of the chunk's A rows, row terms, lane results; the columns
  // [from, to) this call covers (multiples of CW; the state is initialized when from is 0)
  const [rows, aPtr, rowPtr, outPtr, from, to] = [0, 1, 2, 3, 4, 5]
  const p = c.local(I32), end = c.local(I32)
  const col = c.local(I32) // byte offset of the column chunk within a row of column terms
  const bp = c.local(I32) // byte address of the column chunk's packed B panel [k][CW]
  const ap = c.local(I32), rp = c.local(I32), op = c.local(I32) // the row block's A rows, row terms, state
  const da = c.local(I32), db = c.local(I32), dEnd = c.local(I32)
  const jv = c.local(V128), cur = c.local(V128), less = c.local(V128), best = c.local(V128), bi = c.local(V128), nan = c.local(V128)
  const bv = c.local(V128)
  const sv = Array.from({ length: R }, () => c.local(V128))
  const acc = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
  const cidx = Array.from({ length: V }, () => c.local(V128))
  const rowVals = s.rowTerms.map(() => Array.from({ length: R }, () => c.local(V128)))
  const colVals = s.colTerms.map(() => c.local(V128))
  // per-lane argmin state of each row (least value, its column, first NaN column; lane l covers
  // columns = l mod 4) lives in memory, not in locals: fewer live vectors across the dot loop,
  // which TurboFan otherwise spills badly
  const ROW_STATE = 3 * 16
  const stAt = (r: number, which: 0 | 1 | 2) => r * ROW_STATE + which * 16
  const INF4 = [Infinity, Infinity, Infinity, Infinity]
  const mask = n % CW !== 0
  // comparison masks are all ones or all zeros per lane, so relaxed laneselect (blendvps) is exact
  const select = () => laneSelect(c, relaxed)

  c.get(outPtr).get(rows).i32(ROW_STATE).i32Mul().i32Add().set(end)
  c.block()
  c.get(from).brIf(0)
  c.get(outPtr).set(p)
  c.loop()
  c.get(p).vConstF32(INF4).vStore(0)
  c.get(p).vConstI32([0, 0, 0, 0]).vStore(16)
  c.get(p).vConstI32([-1, -1, -1, -1]).vStore(32)
  c.get(p).i32(ROW_STATE).i32Add().tee(p).get(end).i32LtU().brIf(0)
  c.end()
  c.end()

  c.get(from).i32x4Splat().vConstI32([0, 1, 2, 3]).i32x4Add().set(jv)
  c.get(from).i32(4).i32Mul().set(col)
  c.get(from).i32(k * 4).i32Mul().set(bp)
  c.loop() // column chunks
  c.get(aPtr).set(ap)
  c.get(rowPtr).set(rp)
  c.get(outPtr).set(op)
  c.loop() // row blocks
  for (let r = 0; r < R; r++) for (let v = 0; v < V; v++) c.vConstF32([0, 0, 0, 0]).set(acc[r]![v]!)
  // the dot loop: U steps of d per iteration, pointers advanced per iteration
  c.get(ap).set(da)
  c.get(bp).set(db)
  c.get(ap).i32(k * 4).i32Add().set(dEnd)
  c.loop()
  for (let u = 0; u < U; u++) {
    for (let r = 0; r < R; r++) c.get(da).vLoad32Splat((r * k + u) * 4).set(sv[r]!)
    for (let v = 0; v < V; v++) {
      c.get(db).vLoad((u * CW + v * 4) * 4).set(bv)
      for (let r = 0; r < R; r++) {
        if (relaxed) c.get(sv[r]!).get(bv).get(acc[r]![v]!).f32x4RelaxedMadd().set(acc[r]![v]!)
        else c.get(acc[r]![v]!).get(sv[r]!).get(bv).f32x4Mul().f32x4Add().set(acc[r]![v]!)
      }
    }
  }
  c.get(db).i32(U * CW * 4).i32Add().set(db)
  c.get(da).i32(U * 4).i32Add().tee(da).get(dEnd).i32LtU().brIf(0)
  c.end()
  // the epilogue: distances replace the dot products in acc (row terms splatted once per block,
  // column terms loaded once per vector)
  s.rowTerms.forEach((_, ri) => {
    for (let r = 0; r < R; r++) c.get(rp).vLoad32Splat(ri * chunk * 4 + r * 4).set(rowVals[ri]![r]!)
  })
  for (let v = 0; v < V; v++) {
    c.get(jv).vConstI32([v * 4, v * 4, v * 4, v * 4]).i32x4Add().set(cidx[v]!)
    s.colTerms.forEach((_, ci) => c.get(col).vLoad(s.col + ci * npad * 4 + v * 16).set(colVals[ci]!))
    for (let r = 0; r < R; r++) {
      emitEpilogue(c, s.epi, () => c.get(acc[r]![v]!), termLocals(c, s.rowTerms, s.colTerms, (ri) => rowVals[ri]![r]!, colVals))
      if (mask) {
        // padding columns (j >= n) become +Inf: they never win and never count as NaN
        c.vConstF32(INF4)
        c.get(cidx[v]!).vConstI32([n, n, n, n]).i32x4LtS()
        select()
      }
      c.set(acc[r]![v]!)
    }
  }
  for (let r = 0; r < R; r++) {
    const d = acc[r]!
    // first NaN column per lane: unsigned min over the vectors of (column where NaN, else 0xffffffff)
    for (let v = 0; v < V; v++) {
      c.get(cidx[v]!).get(d[v]!).get(d[v]!).f32x4Eq().vOr()
      if (v > 0) c.get(nan).i32x4MinU()
      c.set(nan)
    }
    c.get(op).get(op).vLoad(stAt(r, 2)).get(nan).i32x4MinU().vStore(stAt(r, 2))
    // least value per lane over the vectors, then against the state; strict less keeps the
    // first column (vectors and chunks are visited in column order)
    c.get(d[0]!).set(best)
    c.get(cidx[0]!).set(bi)
    for (let v = 1; v < V; v++) {
      c.get(d[v]!).get(best).f32x4Lt().set(less)
      c.get(best).get(d[v]!).f32x4Pmin().set(best)
      c.get(cidx[v]!).get(bi).get(less)
      select().set(bi)
    }
    c.get(op).vLoad(stAt(r, 0)).set(cur)
    c.get(best).get(cur).f32x4Lt().set(less)
    c.get(op).get(cur).get(best).f32x4Pmin().vStore(stAt(r, 0))
    c.get(op).get(bi).get(op).vLoad(stAt(r, 1)).get(less)
    select().vStore(stAt(r, 1))
  }
  c.get(ap).i32(R * k * 4).i32Add().set(ap)
  c.get(rp).i32(R * 4).i32Add().set(rp)
  c.get(op).i32(R * ROW_STATE).i32Add().tee(op).get(end).i32LtU().brIf(0)
  c.end() // row blocks
  c.get(jv).vConstI32([CW, CW, CW, CW]).i32x4Add().set(jv)
  c.get(bp).i32(k * CW * 4).i32Add().set(bp)
  c.get(col).i32(CW * 4).i32Add().tee(col).get(to).i32(4).i32Mul().i32LtU().brIf(0)
  c.end() // column chunks
  return c
}

/**
 * One row's index from the float32 kernel's per-lane argmin state at element `base` (values, then
 * indices, then first NaN indices): a NaN wins at its first index, else the least value, then the
 * least index.
 */
export function exactRowResult(f32: Float32Array, i32: Int32Array, base: number): number {
  const nanAt = Math.min(i32[base + 8]! >>> 0, i32[base + 9]! >>> 0, i32[base + 10]! >>> 0, i32[base + 11]! >>> 0)
  if (nanAt !== 0xffffffff) return nanAt
  let bv = f32[base]!, bi = i32[base + 4]!
  for (let l = 1; l < 4; l++) {
    const v = f32[base + l]!, j = i32[base + 4 + l]!
    if (v < bv || (v === bv && j < bi)) {
      bv = v
      bi = j
    }
  }
  return bi
}

/** A float32 kernel call: `rows` staged rows from `a` (row terms at `row`) over columns [from, to), its argmin state at `out`. */
export type KernelRun = (rows: number, a: number, row: number, out: number, from: number, to: number) => void

/** Where a staged chunk's parts lie (byte offsets from the chunk's buffer) and its tile shape. */
export interface RescoreGeometry {
  readonly t: { readonly rows: number }
  readonly cw: number
  readonly a: number
  readonly row: number
  readonly scratch: number
}

/**
 * The float32 result of staged row q of the buffer at `at` (rows of `rowBytes`), from the column
 * chunks of `cols` only (screening ruled out every other column): the float32 kernel on q's
 * register tile, its state in the scratch area.
 */
export function rescoreRow(exact: KernelRun, f32: Float32Array, i32: Int32Array, g: RescoreGeometry, rowBytes: number, at: number, q: number, cols: Int32Array, count: number): number {
  const R = g.t.rows
  const q0 = q - (q % R)
  const s = g.scratch / 4
  for (let r = 0; r < R; r++) {
    f32.fill(Infinity, s + r * 12, s + r * 12 + 4)
    i32.fill(0, s + r * 12 + 4, s + r * 12 + 8)
    i32.fill(-1, s + r * 12 + 8, s + r * 12 + 12)
  }
  // the candidates' column chunks in increasing order, each once (ties keep the first column)
  for (let i = 0; i < count; i++) {
    const j0 = cols[i]! - (cols[i]! % g.cw)
    let p = i
    for (; p > 0 && cols[p - 1]! > j0; p--) cols[p] = cols[p - 1]!
    cols[p] = j0
  }
  for (let i = 0; i < count; i++) {
    const j0 = cols[i]!
    if (i === 0 || j0 !== cols[i - 1]) exact(R, at + g.a + q0 * rowBytes, at + g.row + q0 * 4, g.scratch, j0, j0 + g.cw)
  }
  return exactRowResult(f32, i32, s + (q - q0) * 12)
}

/**
 * Multiply-adds of a staged chunk's first kernel call; each further call takes twice the columns
 * of the one before. A chunk is done in a few calls so that the optimized code V8 compiles in
 * the background is used from the next call on (there is no on-stack replacement in
 * WebAssembly); the argmin state between calls is in memory anyway.
 */
const FIRST_CALL_MACS = 1 << 19

export type Drive = (run: KernelRun, rows: number, a: number, row: number, out: number) => void

/** Body of `drive(run, a0, a1, a2, a3)` (one staged chunk: its padded rows and addresses), on every thread. */
export function driverSource(k: number, cw: number, npad: number): string {
  // the row count is a0's low bits (nearest-screen.ts sets flags above them)
  const first = `Math.max(1, Math.floor(${FIRST_CALL_MACS} / ((a0 & ${ROWS_MASK}) * ${k * cw}))) * ${cw}`
  return `for (let c = 0, p = ${first}; c < ${npad}; c += p, p *= 2) run(a0, a1, a2, a3, c, Math.min(c + p, ${npad}))`
}
