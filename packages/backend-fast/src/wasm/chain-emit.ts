import type { LoopStep, RowChain, Var } from '@tessera/core'
import { I32 } from './asm.js'
import { ChainCode, F32, F64 } from './simd-ops.js'
import type { ChainGraph, Places } from './chain-types.js'
import { CTRL_MODE, Unsupported } from './chain-types.js'
import { splat4 } from './chain-expr.js'
import type { Piece } from './chain-loops.js'
import { RowLoops, mask } from './chain-loops.js'
import { mathScratch } from './simd-math.js'

/**
 * Code generation for one chain: `run(thread)` claims blocks; `block(b, scratch)` runs one, with
 * `bitTree` its matmuls whose operand has a bit-tree form as prefix trees (chain-bittree.ts).
 */
export class ChainEmitter extends RowLoops {
  constructor(rc: RowChain, g: ChainGraph, p: Places, private readonly bitTree: boolean) {
    super(rc, g, p)
  }

  /** With `trees`, each claimed block runs function 2 (blockTree) when the call's form word is 1, else function 1. */
  runCode(trees: boolean): ChainCode {
    const c = new ChainCode(1, this.p.pool)
    const tb = c.local(I32), b = c.local(I32)
    c.get(0).i32(this.p.scratchSize).i32Mul().i32(this.p.scratchBase).i32Add().set(tb)
    c.block().loop()
    c.i32(0).i32(1).i32AtomicAdd().set(b)
    c.get(b).i32(this.p.blocks).i32GeU().brIf(1)
    if (trees) {
      // read after the claim, which follows the caller's write of this call's form
      c.i32(0).i32AtomicLoad(4 * CTRL_MODE).ifThen()
      c.get(b).get(tb).call(2)
      c.orElse()
      c.get(b).get(tb).call(1)
      c.end()
    } else c.get(b).get(tb).call(1)
    // blocks this thread ran (ctrl word 4 + thread; tests see who ran what), then blocks done (word 1)
    c.get(0).i32(2).i32Shl().i32(1).i32AtomicAdd(16).drop()
    c.i32(0).i32(1).i32AtomicAdd(4).drop()
    c.br(0)
    c.end().end()
    return c
  }

  blockCode(): ChainCode {
    const c = (this.c = new ChainCode(2, this.p.pool))
    const { n } = this.rc
    const B = 0
    this.tb = 1
    const r = c.local(I32), hi = c.local(I32)
    this.jb = c.local(I32)
    this.ms = mathScratch(c)
    this.live = undefined
    for (const v of this.rc.views) this.rowAddr.set(v.id, c.local(I32))
    const accRow = this.p.sinks.map(() => c.local(I32))
    let k = 0
    const pieces = this.rc.steps.map((st) => (st.sink ? this.sinkPiece(st.step, accRow[k]!, this.p.sinks[k++]!) : this.piece(st.step)))
    const passes = this.passes(pieces)
    // rows [b * R, min(n, b * R + R))
    c.get(B).i32(this.p.rows).i32Mul().tee(r).i32(this.p.rows).i32Add().set(hi)
    c.get(hi).i32(n).get(hi).i32(n).i32LtU().select().set(hi)
    this.p.sinks.forEach((s, i) => c.get(B).i32(8 * s.stride).i32Mul().i32(s.addr).i32Add().set(accRow[i]!))
    c.block().loop()
    c.get(r).get(hi).i32GeU().brIf(1)
    for (const v of this.rc.views) {
      const reg = this.p.views.get(v.id)!
      c.get(r).i32(4 * reg.elems).i32Mul().i32(reg.addr).i32Add().set(this.rowAddr.get(v.id)!)
    }
    for (const pass of passes) {
      if (this.splitExp(pass) || this.sparsePass(pass)) continue
      for (const p of pass) p.pre()
      this.vectors(pass[0]!.w, (tail) => pass.forEach((p) => p.body(tail)))
      for (const p of pass) p.post()
    }
    c.get(r).i32(1).i32Add().set(r)
    c.br(0)
    c.end().end()
    return c
  }

  /**
   * Steps in passes: a step joins the previous pass when it has the same width and reads no
   * per-row reduction of that pass; a sink (whose result nothing in the chain reads) joins the
   * first pass of its width after its operands are written.
   */
  private passes(pieces: readonly Piece[]): Piece[][] {
    const passes: Piece[][] = []
    const readable = (p: Piece, pass: readonly Piece[]) => pass[0]!.w === p.w && pass.every((q) => !q.reduced || !p.reads.has(q.reduced.id))
    for (const p of pieces) {
      if (p.sink) continue
      const last = passes[passes.length - 1]
      if (last && readable(p, last)) last.push(p)
      else passes.push([p])
    }
    const writer = new Map<number, number>()
    passes.forEach((pass, i) => pass.forEach((p) => [...p.writes, ...(p.reduced ? [p.reduced] : [])].forEach((v) => writer.set(v.id, i))))
    for (const p of pieces) {
      if (!p.sink) continue
      const from = Math.max(0, ...[...p.reads].map((id) => writer.get(id) ?? 0))
      const i = passes.findIndex((pass, i) => i >= from && readable(p, pass))
      if (i >= 0) passes[i]!.push(p)
      else passes.push([p])
    }
    // a chain-local value read only inside its own pass never goes to memory
    const passOf = new Map<Piece, number>()
    passes.forEach((pass, i) => pass.forEach((p) => passOf.set(p, i)))
    for (const p of pieces)
      for (const v of p.writes) {
        if (this.rowAddr.has(v.id)) continue
        if (pieces.every((q) => q === p || !q.reads.has(v.id) || passOf.get(q) === passOf.get(p))) this.unstored.add(v.id)
      }
    return passes
  }

  /** Stored values an expression reads (through inlined definitions; `selves` are computed, not read). */
  private readsOf(roots: readonly Var[], selves: ReadonlySet<number>): Set<number> {
    const out = new Set<number>(), seen = new Set<number>()
    const walk = (v: Var, root: boolean) => {
      if (seen.has(v.id)) return
      seen.add(v.id)
      if (!root && this.g.isStored(v) && !selves.has(v.id)) {
        out.add(v.id)
        return
      }
      for (const u of this.g.def(v)?.inputs ?? []) walk(u, false)
    }
    for (const v of roots) walk(v, selves.has(v.id))
    return out
  }

  private piece(st: LoopStep): Piece {
    const c = this.c
    const none = () => {}
    switch (st.kind) {
      case 'loop': case 'expMap': {
        const o = st.out
        const w = this.rowElems(o)
        const d = this.g.def(o)
        return {
          w, reads: this.readsOf([o], new Set([o.id])), writes: [o], sink: false, pre: none, post: none,
          ...(d?.prim === 'exp' ? { expOf: { out: o, arg: d.inputs[0]! } } : {}),
          body: (tail) => {
            const x = this.compute(o, 'row', w)
            this.memo.set(`${o.id}:row`, x)
            this.storeRow(o, x, tail)
          },
        }
      }
      case 'reduce': {
        const e = st.eqn
        const src = e.inputs[0]!
        const w = this.rowElems(src)
        if (this.rowElems(e.out) !== 1 || st.sides.some((s) => this.rowElems(s) !== w)) throw new Unsupported()
        const kind = e.prim === 'reduce_sum' ? 'sum' : e.prim === 'reduce_max' ? 'max' : e.prim === 'reduce_min' ? 'min' : undefined
        if (!kind) throw new Unsupported()
        const acc = this.reduction(kind, w)
        // a sum of its own side output exp(a) (softmax's exp pass in one step) may be split, see splitExp
        const side = st.sides.length === 1 && st.sides[0]!.id === src.id ? this.g.def(src) : undefined
        return {
          w, reads: this.readsOf([src, ...st.sides], new Set(st.sides.map((s) => s.id))), writes: st.sides, reduced: e.out, sink: false,
          ...(kind === 'sum' && (st.sides.length === 0 || side) ? { sumOf: { src, add: acc.add } } : {}),
          ...(kind === 'sum'
            ? { term: () => (st.sides.forEach((s) => this.memo.set(`${s.id}:row`, this.compute(s, 'row', w))), this.value(src, 'row', w)) }
            : {}),
          ...(side?.prim === 'exp' ? { expOf: { out: src, arg: side.inputs[0]! } } : {}),
          pre: acc.pre,
          body: (tail) => {
            for (const s of st.sides) this.memo.set(`${s.id}:row`, this.compute(s, 'row', w))
            for (const s of st.sides) this.storeRow(s, this.memo.get(`${s.id}:row`)!, tail)
            acc.add(this.value(src, 'row', w), tail)
          },
          post: () => {
            acc.result()
            this.storeRowScalar(e.out)
          },
        }
      }
      case 'matmul': {
        const [a, b] = st.eqn.inputs as [Var, Var]
        const out = st.eqn.out
        const k = this.rowElems(a), w = this.rowElems(out)
        const reg = this.p.packed.get(b.id)
        if (a.aval.shape.length !== 2 || k > 64 || !reg || reg.elems !== w || a.aval.dtype !== 'float32') throw new Unsupported()
        const tree = this.bitTree ? this.p.trees.get(b.id) : undefined
        if (tree) return this.treeMatmul(a, out, k, w, tree)
        // each output's k products (exact in float64) added in order from +0 and rounded once:
        // the reference's matmul bit for bit (a float32 sum's error, times softmax's inverse
        // temperature, would exceed the tolerances); a row's k values splat as float64x2
        const as = Array.from({ length: k }, () => this.fresh())
        const bAddr = c.local(I32)
        const lo = this.fresh(), hi = this.fresh()
        return {
          w, reads: new Set([a.id, b.id]), writes: [out], sink: false, post: none,
          pre: () => as.forEach((l, t) => {
            const off = this.rowAddress(a, true)
            c.vLoad32Splat(off + 4 * t).f64x2PromoteLow().set(l)
          }),
          body: (tail) => {
            const x = this.fresh()
            c.get(this.jb).i32(2 * k).i32Mul().set(bAddr)
            c.vConstF64([0, 0]).set(lo).vConstF64([0, 0]).set(hi)
            for (let t = 0; t < k; t++) {
              c.get(lo).get(as[t]!).get(bAddr).vLoad(reg.addr + 32 * t).f64x2Mul().f64x2Add().set(lo)
              c.get(hi).get(as[t]!).get(bAddr).vLoad(reg.addr + 32 * t + 16).f64x2Mul().f64x2Add().set(hi)
            }
            c.get(lo).f32x4DemoteF64x2Zero().get(hi).f32x4DemoteF64x2Zero()
            c.vShuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]).set(x)
            this.memo.set(`${out.id}:row`, x)
            this.storeRow(out, x, tail)
          },
        }
      }
      default:
        throw new Unsupported()
    }
  }

  /**
   * The bit-tree form (chain-bittree.ts) of `a @ b`, w = 2^k: per row, the prefix sums of levels
   * 0..k-3 into the thread's scratch (level by level, in place: node i's children overwrite
   * nodes 2i and 2i+1, i descending, after node i is read); per output vector (4 outputs: the
   * last two levels), its level k-3 node plus the level k-2 pair, each plus the level k-1 pair.
   */
  private treeMatmul(a: Var, out: Var, k: number, w: number, tree: { readonly pairs: number; readonly scratch: number }): Piece {
    const c = this.c
    const P = tree.scratch
    // q_t = (a_t lo_t, a_t hi_t): the exact products, as the plain form's
    const q = (t: number, into: number) => {
      const off = this.rowAddress(a, true)
      c.vLoad32Splat(off + 4 * t).f64x2PromoteLow().i32(0).vLoad(tree.pairs + 16 * t).f64x2Mul().set(into)
    }
    const qt = this.fresh(), q2 = this.fresh(), q1 = this.fresh(), s = this.fresh(), lo = this.fresh()
    const ib = c.local(I32)
    const LOW = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7], HIGH = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15]
    return {
      w, reads: new Set([a.id]), writes: [out], sink: false, post: () => {},
      pre: () => {
        // the root: +0, as the plain form's sums start
        c.get(this.tb).f64Const(0).f64Store(P)
        for (let t = 0; t <= k - 3; t++) {
          q(t, qt)
          c.i32(8 * 2 ** t).set(ib)
          c.loop()
          c.get(ib).i32(8).i32Sub().set(ib)
          c.get(this.tb).get(ib).get(ib).i32Add().i32Add()
          c.get(this.tb).get(ib).i32Add().vLoad64Splat(P).get(qt).f64x2Add().vStore(P)
          c.get(ib).brIf(0)
          c.end()
        }
        q(k - 2, q2)
        q(k - 1, q1)
      },
      body: () => {
        const x = this.fresh()
        // level k-3 node of output vector jb / 16: its float64 at P + 8 (jb / 16)
        c.get(this.tb).get(this.jb).i32(1).i32ShrU().i32Add().vLoad64Splat(P).get(q2).f64x2Add().set(s)
        c.get(s).get(s).vShuffle(LOW).get(q1).f64x2Add().set(lo)
        c.get(lo).f32x4DemoteF64x2Zero()
        c.get(s).get(s).vShuffle(HIGH).get(q1).f64x2Add().f32x4DemoteF64x2Zero()
        c.vShuffle([0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23]).set(x)
        this.memo.set(`${out.id}:row`, x)
        this.storeRow(out, x, 0)
      },
    }
  }

  /** A sum over the leading axis: this row's terms added into the block's float64 partials (one per element, or one in all). */
  private sinkPiece(st: LoopStep, accRow: number, sink: { readonly width: number }): Piece {
    if (st.kind !== 'reduce') throw new Unsupported()
    const c = this.c
    const src = st.eqn.inputs[0]!
    const w = this.rowElems(src)
    const reads = this.readsOf([src], new Set())
    if (sink.width === 1) {
      const acc = this.f64Sum()
      return {
        w, reads, writes: [], sink: true, term: () => this.value(src, 'row', w), pre: acc.pre,
        body: (tail) => acc.add(this.value(src, 'row', w), tail),
        post: () => {
          const s = acc.result()
          c.get(accRow).get(accRow).f64Load().get(s).f64Add().f64Store()
        },
      }
    }
    const a = c.local(I32)
    return {
      w, reads, writes: [], sink: true, term: () => this.value(src, 'row', w), pre: () => {}, post: () => {},
      body: () => {
        const x = this.value(src, 'row', w)
        // adding zeros leaves a partial unchanged (it starts at +0, so it is never -0): a vector
        // of zeros (softmax's underflowed probabilities) skips the read-modify-write
        c.get(this.jb).i32(1).i32Shl().get(accRow).i32Add().set(a)
        c.get(a).get(a).vLoad().get(x).f64x2PromoteLow().f64x2Add().vStore()
        c.get(a).get(a).vLoad(16).get(x).get(x).vShuffle(ChainCode.HIGH).f64x2PromoteLow().f64x2Add().vStore(16)
      },
    }
  }

  /** A float64 sum of a row's float32 lanes (two float64x2 accumulators); `result` leaves it in an f64 local. */
  private f64Sum(): { pre(): void; add(x: number, tail: number): void; result(): number } {
    const c = this.c
    const lo = this.fresh(), hi = this.fresh(), res = c.local(F64)
    return {
      pre: () => c.vConstF64([0, 0]).set(lo).vConstF64([0, 0]).set(hi),
      add: (x, tail) => {
        if (tail > 0) c.get(x).vConstI32(mask(tail)).vAnd().set(x)
        c.get(lo).get(x).f64x2PromoteLow().f64x2Add().set(lo)
        c.get(hi).get(x).get(x).vShuffle(ChainCode.HIGH).f64x2PromoteLow().f64x2Add().set(hi)
      },
      result: () => {
        c.get(lo).get(hi).f64x2Add().set(lo)
        c.get(lo).f64x2ExtractLane(0).get(lo).f64x2ExtractLane(1).f64Add().set(res)
        return res
      },
    }
  }

  /**
   * A per-row sum (float64, rounded once), max or min (running pmax/pmin per lane, NaN tracked
   * apart: the reference's max is NaN when any element is); `result` pushes the float32 result.
   */
  private reduction(kind: 'sum' | 'max' | 'min', w: number): { pre(): void; add(x: number, tail: number): void; result(): void } {
    const c = this.c
    if (kind === 'sum') {
      const s = this.f64Sum()
      return { pre: s.pre, add: s.add, result: () => c.get(s.result()).f32DemoteF64() }
    }
    if (w === 0) throw new Unsupported()
    const m = this.fresh(), nan = this.fresh(), t = this.fresh()
    const id = kind === 'max' ? -Infinity : Infinity
    const fold = () => (kind === 'max' ? c.f32x4Pmax() : c.f32x4Pmin())
    return {
      pre: () => c.vConstF32(splat4(id)).set(m).vConstI32([0, 0, 0, 0]).set(nan),
      add: (x, tail) => {
        if (tail > 0) c.get(x).vConstF32(splat4(id)).vConstI32(mask(tail)).bitselect().set(x)
        c.get(nan).get(x).get(x).f32x4Ne().vOr().set(nan)
        c.get(m).get(x)
        fold()
        c.set(m)
      },
      result: () => {
        c.get(m).get(m).vShuffle([8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7]).set(t)
        c.get(m).get(t)
        fold()
        c.set(m)
        c.get(m).get(m).vShuffle([4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15]).set(t)
        c.get(m).get(t)
        fold()
        const lane = c.local(F32)
        c.f32x4ExtractLane(0).set(lane)
        c.f32Const(NaN).get(lane).get(nan).vAnyTrue().select()
      },
    }
  }

}
