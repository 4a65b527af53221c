import { I32, V128, assemble } from './asm.js'
import { ElemCode } from './elem-code.js'
import type { ChunkedReads, ElemExpr, ElemGroup, ElemRun, ElemType, GatheredRead } from './elementwise.js'
import { chunkOf, groupReads, lcm, perRowIndex } from './elementwise.js'
import { int32Bits, rowGatherOn } from './row-gather.js'
import type { RowGather } from './row-gather.js'
import { ConstPool, F64 } from './simd-ops.js'
import { emitTanh, tanhScratch } from './simd-tanh.js'

/**
 * One kernel, run on chunks of `chunk` elements (a multiple of every repeated row's width and of
 * a row sum's width, so a chunk starts at a row; `padded` is it rounded up to whole vectors) (the
 * host copies each chunk of every operand in and of every output out, so the kernel's memory
 * stays in L2 however long the arrays are): operands at 16-byte aligned regions of `padded`
 * elements (operand w at w * padded * 4), the single values after them (16 bytes each), then the
 * outputs (output o at outOff + o * padded * 4), then a row sum's terms and its sums.
 */
export interface ElemLayout extends ChunkedReads {
  /** The type each read slot is read as (its array's element type). */
  readonly types: ReadonlyMap<number, ElemType>
  readonly singleOff: number
  readonly outOff: number
  /** The row sum's terms (`padded` elements) and sums (one per row of the chunk). */
  readonly termOff: number
  readonly sumOff: number
  /** Whole operands gathered in the kernel's memory: each one's table and a chunk's indices, and where a bad index is reported. */
  readonly gathers: readonly GatherRegion[]
  readonly errOff: number
  /** Byte offset of each per-row value's region (one value per run of its `inner` elements of a chunk). */
  readonly perRowOff: readonly number[]
  readonly bytes: number
}

export interface GatherRegion {
  /** The operand's position among the whole operands. */
  readonly w: number
  readonly read: GatheredRead
  readonly tabOff: number
  readonly ixOff: number
}

const align16 = (x: number) => Math.ceil(x / 16) * 16

/**
 * `multiple`: chunks hold a multiple of this many elements (besides whole rows). `gathered`:
 * whole operands the pass gathers itself (chunks then hold whole gathered rows).
 */
export function elementwiseLayout(g: ElemGroup, multiple = 1, gathered?: ReadonlyMap<number, GatheredRead>): ElemLayout {
  const { whole, single, rows, perRow, width, types } = groupReads(g)
  const own = whole.flatMap((s, w) => (gathered?.has(s) ? [{ w, read: gathered.get(s)! }] : []))
  const w = own.reduce((m, x) => lcm(m, x.read.inner), lcm(g.rowSum ? lcm(width, g.rowSum.width) : width, multiple))
  const { chunk, padded } = chunkOf(g.n, w)
  const singleOff = (whole.length + rows.length) * padded * 4
  const outOff = singleOff + 16 * single.length
  const termOff = outOff + 4 * padded * g.exprs.length
  const sumOff = termOff + (g.rowSum ? 4 * padded : 0)
  let bytes = align16(sumOff + (g.rowSum ? 4 * Math.ceil(chunk / g.rowSum.width) : 0))
  const errOff = bytes
  if (own.length > 0) bytes += 16
  const gathers = own.map(({ w, read }) => {
    const tabOff = bytes
    const ixOff = align16(tabOff + 4 * read.d * read.inner)
    bytes = align16(ixOff + 4 * (chunk / read.inner))
    return { w, read, tabOff, ixOff }
  })
  const perRowOff = perRow.map((p) => {
    const at = bytes
    bytes = align16(bytes + 4 * Math.ceil(chunk / p.inner))
    return at
  })
  return { n: g.n, chunk, padded, whole, rows, perRow, single, types, singleOff, outOff, termOff, sumOff, gathers, errOff, perRowOff, bytes }
}

const splat4 = (x: number) => [x, x, x, x]

/** Leaves op `x`'s value on the stack, its arguments' values (in order) having been pushed. */
function emitOp(c: ElemCode, x: Extract<ElemExpr, { kind: 'op' }>, scratch: () => { v: number; u: number; t: ReturnType<typeof tanhScratch> }): void {
  const at = x.args[0]!.type
  const f = at === 'f32'
  switch (x.prim) {
    case 'add': f ? c.f32x4Add() : c.i32x4Add(); return
    case 'sub': f ? c.f32x4Sub() : c.i32x4Sub(); return
    case 'mul': f ? c.f32x4Mul() : c.i32x4Mul(); return
    case 'div': c.f32x4Div(); return
    case 'max': case 'min': {
      // the reference's: the first operand where it is NaN or strictly greater (less), else the second
      const { v, u } = scratch()
      c.set(u).set(v)
      c.get(v).get(u).get(v).get(u)
      if (x.prim === 'max') c.f32x4Gt()
      else c.f32x4Lt()
      c.get(v).get(v).f32x4Ne().vOr().bitselect()
      return
    }
    case 'sqrt': c.f32x4Sqrt(); return
    case 'neg': f ? c.f32x4Neg() : c.i32x4Neg(); return
    case 'abs': f ? c.f32x4Abs() : c.i32x4Abs(); return
    case 'floor': c.f32x4Floor(); return
    case 'round': c.f32x4Nearest(); return
    case 'recip': {
      const { v } = scratch()
      c.set(v).vConstF32(splat4(1)).get(v).f32x4Div()
      return
    }
    case 'tanh': {
      const { v, t } = scratch()
      c.set(v)
      emitTanh(c, v, t)
      c.get(v)
      return
    }
    case 'lt': f ? c.f32x4Lt() : c.i32x4LtS(); return
    case 'le': f ? c.f32x4Le() : c.i32x4LeS(); return
    case 'eq': f ? c.f32x4Eq() : c.i32x4Eq(); return
    case 'where': c.bitselect(); return
    case 'cast': {
      const to = x.type
      if (to === at) return
      if (to === 'bool') {
        // x != 0 (a NaN is true, -0 false)
        if (f) c.vConstF32(splat4(0)).f32x4Ne()
        else c.vConstI32(splat4(0)).i32x4Ne()
      } else if (at === 'bool') {
        if (to === 'f32') c.vConstF32(splat4(1)).vAnd()
        else c.vConstI32(splat4(1)).vAnd()
      } else if (to === 'f32') c.f32x4ConvertI32x4S()
      else c.i32x4TruncSatF32x4S()
      return
    }
  }
}

/**
 * Where a chunk's regions are: each as a local holding a byte address plus a constant offset
 * (the single-thread kernel addresses everything from its chunk walker; the threaded one, whole
 * arrays from the block's position and scratch from the thread's).
 */
export interface ChunkAddressing {
  /** Byte address of the current vector in the whole operands and outputs, and its offset there per region. */
  readonly at: number
  readonly whole: (w: number) => number
  readonly out: (o: number) => number
  /** Byte address of the current vector within the chunk (repeated rows), and each row region's offset. */
  readonly inChunk: number
  readonly row: (r: number) => number
  /** The row sum's terms: byte address of the chunk's first term, and of the chunk's first sum. */
  readonly termBase: number
  readonly sumAt: number
  /**
   * A local holding 4 x the index of the current vector's first element among those the per-row
   * regions' values cover (the chunk's in the single-thread kernel, the array's in the threaded
   * one), and each per-row region's byte offset.
   */
  readonly perRowAt: number
  readonly perRow: (r: number) => number
}

/**
 * Splats the single values into locals (once per function): call before the chunk loops.
 */
export function singleSplats(c: ElemCode, L: ElemLayout): number[] {
  const splats = L.single.map(() => c.local(V128))
  L.single.forEach((_, i) => c.i32(0).vLoad32Splat(L.singleOff + 16 * i).set(splats[i]!))
  return splats
}

/**
 * One loop computing every expression per group of four elements (shared subexpressions once)
 * over `bytes` bytes of the chunk, then the row sums of its `nrows` rows. The addressing locals
 * `at` and `inChunk` start at the chunk's first vector; both advance 16 bytes a step.
 */
export function emitChunk(c: ElemCode, g: ElemGroup, L: ElemLayout, A: ChunkAddressing, splats: readonly number[], bytes: number, nrows: number): void {
  const es = g.exprs
  const temps = new Map<ElemExpr, number>()
  let scr: { v: number; u: number; t: ReturnType<typeof tanhScratch> } | undefined
  const scratch = () => (scr ??= { v: c.local(V128), u: c.local(V128), t: tanhScratch(c) })
  // how often each op is used: shared subexpressions (and outputs read by later ones) stay in a local
  const uses = new Map<ElemExpr, number>()
  const count = (x: ElemExpr) => {
    uses.set(x, (uses.get(x) ?? 0) + 1)
    if (uses.get(x) === 1 && x.kind === 'op') x.args.forEach(count)
  }
  const roots = g.rowSum ? [...es, g.rowSum.term] : es
  roots.forEach(count)
  const emit = (x: ElemExpr): void => {
    switch (x.kind) {
      case 'read': c.get(A.at).vLoad(A.whole(L.whole.indexOf(x.slot))); return
      case 'scalar': c.get(splats[L.single.indexOf(x.slot)]!); return
      case 'row': c.get(A.inChunk).vLoad(A.row(L.rows.indexOf(x.slot))); return
      case 'perRow':
        // 4 x (element / inner), from 4 x element: a shift and the low two bits cleared
        c.get(A.perRowAt).i32(Math.log2(x.inner)).i32ShrU().i32(-4).i32And().vLoad32Splat(A.perRow(perRowIndex(L.perRow, x)))
        return
      case 'const':
        if (x.type === 'f32') c.vConstF32(splat4(x.value))
        else c.vConstI32(splat4(x.type === 'bool' ? -x.value : x.value))
        return
      case 'op': {
        const t = temps.get(x)
        if (t !== undefined) {
          c.get(t)
          return
        }
        // bitselect takes (if-true, if-false, mask)
        ;(x.prim === 'where' ? [x.args[1]!, x.args[2]!, x.args[0]!] : x.args).forEach(emit)
        emitOp(c, x, scratch)
        if ((uses.get(x) ?? 0) > 1) {
          const l = c.local(V128)
          temps.set(x, l)
          c.tee(l)
        }
      }
    }
  }
  const end = c.local(I32)
  c.get(A.inChunk).get(bytes).i32Add().set(end)
  c.loop()
  es.forEach((e, o) => {
    c.get(A.at)
    emit(e)
    c.vStore(A.out(o))
  })
  if (g.rowSum) {
    c.get(A.inChunk).get(A.termBase).i32Add()
    emit(g.rowSum.term)
    c.vStore(0)
  }
  temps.clear()
  c.get(A.at).i32(16).i32Add().set(A.at)
  c.get(A.inChunk).i32(16).i32Add().tee(A.inChunk).get(end).i32LtU().brIf(0)
  c.end()
  if (g.rowSum) emitRowSums(c, g.rowSum, nrows, A)
}

/**
 * Bytes of vector constants kept in a kernel's memory (`ConstPool`): a v128.const is rebuilt in
 * place at every use, three or four instructions, where a load from the pool is one (tanh reads
 * about 20 constants per vector; bench/README.md's float32 tanh section has the measurement).
 */
export const CONST_POOL_BYTES = 4096

/** The single-thread kernel: `run(bytes, rows)` covers one chunk at the start of every region. */
export function elementwiseModule(g: ElemGroup, L: ElemLayout, pages: number, pool?: ConstPool): WebAssembly.Module {
  const c = new ElemCode(2, pool)
  const bytes = 0, nrows = 1
  const p = c.local(I32), q = c.local(I32), term = c.local(I32), sum = c.local(I32)
  const splats = singleSplats(c, L)
  c.i32(0).set(p).i32(0).set(q).i32(L.termOff).set(term).i32(L.sumOff).set(sum)
  const A: ChunkAddressing = {
    at: p, whole: (w) => w * L.padded * 4, out: (o) => L.outOff + o * L.padded * 4,
    inChunk: q, row: (r) => (L.whole.length + r) * L.padded * 4, termBase: term, sumAt: sum,
    perRowAt: q, perRow: (r) => L.perRowOff[r]!,
  }
  emitChunk(c, g, L, A, splats, bytes, nrows)
  return new WebAssembly.Module(assemble(pages, [{ name: 'run', code: c }], false) as BufferSource)
}

/** Each row's terms added in order from 0 (float32 terms in a float64, rounded once; int32 wrapping): the reference's sum. */
function emitRowSums(c: ElemCode, rs: NonNullable<ElemGroup['rowSum']>, nrows: number, A: ChunkAddressing): void {
  const f = rs.term.type === 'f32'
  const q = c.local(I32), o = c.local(I32), end = c.local(I32), acc = c.local(f ? F64 : I32)
  c.get(A.termBase).set(q).get(A.sumAt).tee(o).get(nrows).i32(4).i32Mul().i32Add().set(end)
  c.block().loop()
  c.get(o).get(end).i32GeU().brIf(1)
  if (f) c.f64Const(0).set(acc)
  else c.i32(0).set(acc)
  for (let j = 0; j < rs.width; j++) {
    if (f) c.get(acc).get(q).f32Load(4 * j).f64PromoteF32().f64Add().set(acc)
    else c.get(acc).get(q).i32Load(4 * j).i32Add().set(acc)
  }
  c.get(o).get(acc)
  if (f) c.f32DemoteF64().f32Store()
  else c.i32Store()
  c.get(q).i32(4 * rs.width).i32Add().set(q)
  c.get(o).i32(4).i32Add().set(o)
  c.br(0)
  c.end().end()
}

/**
 * Fills `m[at, at + len)` with `v` repeated (the last copy cut short): one copy of `v`, then
 * copies of what is filled, doubling, so a narrow row (FSQ's 4 levels) costs a few calls, not
 * one per repeat.
 */
export function tileRow(m: Float32Array | Int32Array, at: number, v: Float32Array | Int32Array, len: number): void {
  const w = Math.min(v.length, len)
  m.set(w === v.length ? v : v.subarray(0, w), at)
  for (let done = w; done < len; done *= 2) m.copyWithin(at + done, at, at + Math.min(done, len - done))
}

/** Row sums up to this width are unrolled in the module (wider ones keep the JS loop). */
export const ROW_SUM_MAX = 64

/** Whether a group is worth running on several threads: a tanh over at least `minElems` elements. */
export function heavyGroup(g: ElemGroup, minElems: number): boolean {
  const tanh = (x: ElemExpr): boolean => x.kind === 'op' && (x.prim === 'tanh' || x.args.some(tanh))
  return g.n >= minElems && [...g.exprs, ...(g.rowSum ? [g.rowSum.term] : [])].some(tanh)
}

/**
 * Kernels sharing one memory (they run one at a time on the calling thread), compiled on first
 * use once every kernel of the plan is known: `add` registers one and returns its runner.
 * `gathered`: whole operands the pass gathers itself (their slots are never read).
 */
export function elementwiseSet(): { add(g: ElemGroup, gathered?: ReadonlyMap<number, GatheredRead>): ElemRun } {
  const pending: { g: ElemGroup; L: ElemLayout; run?: (bytes: number, rows: number) => void }[] = []
  let f32: Float32Array | undefined
  let i32: Int32Array | undefined
  let memory: WebAssembly.Memory | undefined
  // the row copy gathered operands are filled by (row-gather.ts), one per memory
  let gather: RowGather | undefined
  const build = () => {
    // one constant pool after the largest kernel's layout, shared by all kernels of the set
    const base = Math.ceil(Math.max(...pending.map((k) => k.L.bytes)) / 16) * 16
    const pool = new ConstPool(base, CONST_POOL_BYTES)
    const pages = Math.ceil((base + CONST_POOL_BYTES) / 65536)
    const modules = pending.map((k) => elementwiseModule(k.g, k.L, pages, pool))
    // not shared: these loops run on the calling thread (and a browser page needs no cross-origin isolation)
    const m = (memory = new WebAssembly.Memory({ initial: pages, maximum: pages }))
    new Uint8Array(m.buffer).set(pool.bytes, base)
    f32 = new Float32Array(m.buffer)
    i32 = new Int32Array(m.buffer)
    pending.forEach((k, i) => (k.run = (new WebAssembly.Instance(modules[i]!, { env: { memory: m } }).exports as { run: (bytes: number, rows: number) => void }).run))
    if (pending.some((k) => k.L.gathers.length > 0)) gather = rowGatherOn(m, pages)
  }
  return {
    add(g, gathered) {
      const k: (typeof pending)[number] = { g, L: elementwiseLayout(g, 1, gathered) }
      pending.push(k)
      const { L } = k
      const rs = g.rowSum
      // the memory view of each output's element type (an int32 output's array is an Int32Array)
      const outTypes = g.exprs.map((e) => e.type)
      const copied = L.whole.flatMap((s, w) => (L.gathers.some((x) => x.w === w) ? [] : [{ s, w }]))
      return (B, outs) => {
        if (!memory) build()
        const view = (t: ElemType | undefined) => (t === 'i32' ? i32! : f32!)
        L.single.forEach((s, i) => (view(L.types.get(s))[(L.singleOff >> 2) + 4 * i] = B[s]![0]!))
        L.rows.forEach((s, r) => tileRow(view(L.types.get(s)), (L.whole.length + r) * L.padded, B[s] as Float32Array, L.chunk))
        L.gathers.forEach(({ read, tabOff }) => i32!.set(int32Bits(B[read.table]!), tabOff >> 2))
        for (let lo = 0; lo < L.n; lo += L.chunk) {
          const len = Math.min(L.chunk, L.n - lo)
          for (const { s, w } of copied) view(L.types.get(s)).set((B[s] as Float32Array).subarray(lo, lo + len), w * L.padded)
          L.perRow.forEach(({ slot, inner }, r) => view(L.types.get(slot)).set((B[slot] as Float32Array).subarray(lo / inner, (lo + len) / inner), L.perRowOff[r]! >> 2))
          for (const { w, read, tabOff, ixOff } of L.gathers) {
            const row = lo / read.inner, rows = len / read.inner
            i32!.set((B[read.index] as Int32Array).subarray(row, row + rows), ixOff >> 2)
            gather!(tabOff, ixOff, w * L.padded * 4, rows, 4 * read.inner, read.d, L.errOff)
            if (i32![L.errOff >> 2]! >= 0) read.fail(B)
          }
          k.run!(Math.ceil(len / 4) * 16, rs ? len / rs.width : 0)
          outTypes.forEach((t, o) => {
            const at = (L.outOff >> 2) + o * L.padded
            outs[o]!.set(view(t).subarray(at, at + len), lo)
          })
          if (rs) outs[outTypes.length]!.set(view(rs.term.type).subarray(L.sumOff >> 2, (L.sumOff >> 2) + len / rs.width), lo / rs.width)
        }
      }
    },
  }
}
