import type { Var } from '@tessera/core'
import { I32 } from './asm.js'
import { ChainCode, F32 } from './simd-ops.js'
import { EXP_ZERO_BELOW, RowExpr, splat4 } from './chain-expr.js'
import { emitExp } from './simd-math.js'

/**
 * One step's part of a row pass: what it reads and writes, and its code before, inside and after
 * the loop over the row's vectors. Consecutive steps of one width share a pass (one loop), so a
 * value one writes and the next reads stays in a register.
 */
export interface Piece {
  readonly w: number
  /** Stored values it reads (ids). */
  readonly reads: ReadonlySet<number>
  /** Row values it writes element by element (usable by later pieces of its pass). */
  readonly writes: readonly Var[]
  /** A per-row reduction's result (readable only after its pass). */
  readonly reduced?: Var
  readonly sink: boolean
  /** An exp map's value and argument (for the split exp pass). */
  readonly expOf?: { readonly out: Var; readonly arg: Var }
  /** A per-row sum's operand and its accumulation (for the split exp pass). */
  readonly sumOf?: { readonly src: Var; add(x: number, tail: number): void }
  /**
   * For a piece that only adds a term into float64 sums (a per-row sum, a sink; side outputs
   * aside): computes its term (and the side outputs it is made of) at the current vector.
   */
  readonly term?: () => number
  pre(): void
  body(tail: number): void
  post(): void
}

export const mask = (tail: number) => [0, 1, 2, 3].map((l) => (l < tail ? -1 : 0))

/**
 * The loops of a row's passes (chain-emit.ts builds the pieces and the passes): one over a row's
 * vectors, the stores of row values, and the exp pass of softmax with the sums after it, which
 * run exp and add terms only for vectors whose values are not all +0 (same bits).
 */
export class RowLoops extends RowExpr {
  /** Values whose every reader shares their pass: never stored. */
  protected unstored = new Set<number>()
  /** Exp passes emitted as two loops (see splitExp). */
  splitPasses = 0
  /** Passes that may skip the vectors an exp pass found +0 (see sparsePass). */
  sparsePasses = 0
  /** The last split exp pass of the row: its value, width and the local counting its listed vectors. */
  protected live: { readonly id: number; readonly w: number; readonly count: number } | undefined

  /**
   * softmax's exp pass (an exp map and the row sum of its values, as two steps or as a sum with
   * the map as its side output; rows of whole vectors) in two loops: the first stores each
   * vector's argument and appends its offset to a list when some lane's exp is not +0
   * (branch-free; +0 stored for the others), the second runs exp and the sum over the listed
   * vectors only, in row order: no branch on the data, which the one-loop pass mispredicts on a
   * peaked softmax's scattered live vectors. Adding +0 leaves a float64 sum unchanged (it starts
   * at +0, so it is never -0), so the results are the one-loop pass's bits.
   */
  protected splitExp(pass: readonly Piece[]): boolean {
    const [pe, ps = pe] = pass as [Piece, Piece | undefined]
    const exp = pe.expOf, sum = ps.sumOf
    if (pass.length > 2 || (pass.length === 2 && pe.sumOf) || !exp || !sum || sum.src.id !== exp.out.id || pe.w % 4 !== 0) return false
    this.splitPasses++
    const c = this.c
    const w = pe.w
    const A = this.p.spare, L = this.listAt(w)
    const cnt = c.local(I32), i = c.local(I32)
    const own = pe === ps ? [pe] : [pe, ps]
    own.forEach((p) => p.pre())
    c.i32(0).set(cnt)
    this.vectors(w, () => {
      const x = this.value(exp.arg, 'row', w)
      c.get(this.tb).get(this.jb).i32Add().get(x).vStore(A)
      const z = this.fresh()
      c.vConstF32(splat4(0)).set(z)
      this.storeRow(exp.out, z, 0)
      c.get(this.tb).get(cnt).i32(2).i32Shl().i32Add().get(this.jb).i32Store(L)
      c.get(cnt).get(x).vConstF32(splat4(EXP_ZERO_BELOW)).f32x4Lt().vNot().vAnyTrue().i32Add().set(cnt)
    })
    c.i32(0).set(i)
    c.block().loop()
    c.get(i).get(cnt).i32GeU().brIf(1)
    c.get(this.tb).get(i).i32(2).i32Shl().i32Add().i32Load(L).set(this.jb)
    const x = this.fresh()
    c.get(this.tb).get(this.jb).i32Add().vLoad(A).set(x)
    emitExp(c, x, this.ms!)
    this.storeRow(exp.out, x, 0)
    sum.add(x, 0)
    c.get(i).i32(1).i32Add().set(i)
    c.br(0)
    c.end().end()
    own.forEach((p) => p.post())
    this.live = { id: exp.out.id, w, count: cnt }
    return true
  }

  /** A thread's spare room holds a row of exp arguments, then the list of live vectors' byte offsets. */
  private listAt(w: number): number {
    return this.p.spare + 4 * w + 16
  }

  /**
   * A pass of sums (per-row sums, sinks; side outputs read only there) after a split exp pass,
   * whose terms are computed from that pass's values and from values constant along the row
   * (per-row values, literals): where every term of a vector of +0 values is +0 or -0 (checked
   * per row by computing them once), the vectors the exp pass left at +0 would add only zeros,
   * which leave a float64 sum unchanged, so the loop runs over the listed vectors only;
   * otherwise over every vector.
   */
  protected sparsePass(pass: readonly Piece[]): boolean {
    const live = this.live
    // side outputs never stored (read only in this pass) need not be computed where skipped
    if (!live || pass.some((p) => !p.term || p.w !== live.w || p.writes.some((v) => !this.unstored.has(v.id)))) return false
    const key = `${live.id}:row`
    // a dry run on throwaway code: does any term read a value that changes along the row?
    const real = this.c
    this.c = new ChainCode(2, this.p.pool)
    this.probe = { varies: false }
    this.memo.clear()
    this.memo.set(key, this.fresh())
    for (const p of pass) p.term!()
    const varies = this.probe.varies
    this.probe = undefined
    this.c = real
    if (varies) return false
    this.sparsePasses++
    const c = this.c
    for (const p of pass) p.pre()
    // the terms of a vector of +0 values, their bits or-ed: any beyond the sign bit means some is not zero
    const zero = this.fresh(), bits = this.fresh()
    this.memo.clear()
    c.vConstF32(splat4(0)).set(zero).vConstI32(splat4(0)).set(bits)
    this.memo.set(key, zero)
    for (const p of pass) c.get(bits).get(p.term!()).vOr().set(bits)
    c.get(bits).vConstI32(splat4(0x7fffffff)).vAnd().vAnyTrue().ifThen()
    this.vectors(live.w, (tail) => pass.forEach((p) => p.body(tail)))
    c.orElse()
    const i = c.local(I32)
    const L = this.listAt(live.w)
    c.i32(0).set(i)
    c.block().loop()
    c.get(i).get(live.count).i32GeU().brIf(1)
    c.get(this.tb).get(i).i32(2).i32Shl().i32Add().i32Load(L).set(this.jb)
    this.memo.clear()
    pass.forEach((p) => p.body(0))
    c.get(i).i32(1).i32Add().set(i)
    c.br(0)
    c.end().end()
    c.end()
    for (const p of pass) p.post()
    return true
  }

  /** Emits `body(tail)` for each float32x4 of a row of `w` elements: whole vectors in a loop (tail 0), then the last partial one. */
  protected vectors(w: number, body: (tail: number) => void): void {
    const c = this.c
    const full = Math.floor(w / 4), tail = w % 4
    if (full > 0) {
      c.i32(0).set(this.jb)
      c.block().loop()
      c.get(this.jb).i32(16 * full).i32GeU().brIf(1)
      this.memo.clear()
      body(0)
      c.get(this.jb).i32(16).i32Add().set(this.jb)
      c.br(0)
      c.end().end()
    }
    if (tail > 0) {
      c.i32(16 * full).set(this.jb)
      this.memo.clear()
      body(tail)
    }
  }

  /** Stores a vector to a row value's current position (lane stores on a view's partial last vector, none for an unstored value). */
  protected storeRow(v: Var, x: number, tail: number): void {
    if (this.unstored.has(v.id)) return
    const c = this.c
    const isView = this.rowAddr.has(v.id)
    const off = this.rowAddress(v, false)
    if (tail === 0 || !isView) {
      c.get(x).vStore(off)
      return
    }
    const a = c.local(I32)
    c.set(a)
    for (let l = 0; l < tail; l++) c.get(a).get(x).vStore32Lane(off + 4 * l, l)
  }

  /** Stores a float32 (on the stack) as a row value's only element of the current row. */
  protected storeRowScalar(v: Var): void {
    const c = this.c
    const tmp = c.local(F32)
    c.set(tmp)
    const off = this.rowAddress(v, true)
    c.get(tmp).f32Store(off)
  }
}
