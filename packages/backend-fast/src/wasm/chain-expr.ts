import type { Eqn, RowChain, Var } from '@tessera/core'
import { V128 } from './asm.js'
import type { ChainGraph, Mode, Places } from './chain-types.js'
import { Unsupported, elems } from './chain-types.js'
import { ChainCode } from './simd-ops.js'
import type { MathScratch } from './simd-math.js'
import { emitExp, emitLog } from './simd-math.js'

export const splat4 = (x: number) => [x, x, x, x]
/** exp of a float32 below this rounds to +0 (e^-104 is below half the least subnormal, 2^-150). */
export const EXP_ZERO_BELOW = -104

/**
 * The float32x4 value of a chain step's fused expression at the current vector of the current
 * row: stored values are loaded (a view's row, a thread's row of a chain-local value, a value read
 * whole), inlined ones computed from their definitions, each once per vector (memoized).
 */
export class RowExpr {
  /** Per row: the byte address of each view's row (an i32 local). */
  protected rowAddr = new Map<number, number>()
  /** The current lane offset in bytes within the row (an i32 local). */
  protected jb = 0
  /** The thread's scratch area (an i32 local). */
  protected tb = 0
  protected memo = new Map<string, number>()
  /** While set, a load of a stored value that changes along the row marks `varies` (see ChainEmitter.sparsePass). */
  protected probe: { varies: boolean } | undefined
  protected ms: MathScratch | undefined

  protected c = new ChainCode(0)

  constructor(protected readonly rc: RowChain, protected readonly g: ChainGraph, protected readonly p: Places) {}

  protected rowElems(v: Var): number {
    return elems(v) / this.rc.n
  }

  /** Pushes the byte address (without the static offset) of lane 0 of a row value's current vector; returns the static offset. */
  protected rowAddress(v: Var, splat: boolean): number {
    const c = this.c
    const ra = this.rowAddr.get(v.id)
    if (ra !== undefined) {
      c.get(ra)
      if (!splat) c.get(this.jb).i32Add()
      return 0
    }
    const off = this.p.locals.get(v.id)
    if (off === undefined) throw new Unsupported()
    c.get(this.tb)
    if (!splat) c.get(this.jb).i32Add()
    return off
  }

  protected fresh(): number {
    return this.c.local(V128)
  }

  /**
   * A local holding four lanes of `v`: in mode `row`, elements j..j+3 of the current row (a row
   * of the width being walked); `rowSplat`, the row's only element in every lane; `whole`,
   * elements j..j+3 of a value read whole; `wholeSplat`, a one-element value in every lane.
   */
  protected value(v: Var, mode: Mode, w: number): number {
    const key = `${v.id}:${mode}`
    const hit = this.memo.get(key)
    if (hit !== undefined) return hit
    if (v.aval.dtype !== 'float32') throw new Unsupported()
    const c = this.c
    let out: number
    if (this.g.isStored(v)) {
      out = this.fresh()
      if (this.probe && (mode === 'row' || mode === 'whole')) this.probe.varies = true
      if (mode === 'row' || mode === 'rowSplat') {
        if (this.rowElems(v) !== (mode === 'row' ? w : 1)) throw new Unsupported()
        const off = this.rowAddress(v, mode === 'rowSplat')
        if (mode === 'row') c.vLoad(off)
        else c.vLoad32Splat(off)
      } else {
        const reg = this.p.whole.get(v.id)
        if (!reg || reg.elems !== (mode === 'whole' ? w : 1)) throw new Unsupported()
        if (mode === 'whole') c.get(this.jb).vLoad(reg.addr)
        else c.i32(0).vLoad32Splat(reg.addr)
      }
      c.set(out)
    } else out = this.compute(v, mode, w)
    this.memo.set(key, out)
    return out
  }

  /** Computes `v` from its definition (the loop's own value, a side output, or an inlined one). */
  protected compute(v: Var, mode: Mode, w: number): number {
    const e = this.g.def(v)
    if (!e || v.aval.dtype !== 'float32') throw new Unsupported()
    const c = this.c
    const { n } = this.rc
    const isRow = (u: Var) => u.aval.shape.length === v.aval.shape.length && u.aval.shape[0] === n
    const lit = (x: number) => {
      const o = this.fresh()
      c.vConstF32(splat4(Math.fround(x))).set(o)
      return o
    }
    switch (e.prim) {
      case 'full':
        return lit(e.params.value)
      case 'constant':
        if (e.params.data.length !== 1) throw new Unsupported()
        return lit(Number(e.params.data[0]))
      case 'stop_gradient':
        return this.value(e.inputs[0]!, mode, w)
      case 'reshape': {
        const u = e.inputs[0]!
        if ((mode === 'row' || mode === 'rowSplat') && u.aval.shape[0] !== n) throw new Unsupported()
        return this.value(u, mode, w)
      }
      case 'broadcast': {
        const u = e.inputs[0]!
        // a row value first (with one row, a per-row value also has one element)
        if (mode === 'row' && isRow(u)) {
          const ue = this.rowElems(u)
          if (ue === w) return this.value(u, 'row', w)
          if (ue === 1) return this.value(u, 'rowSplat', 1)
          throw new Unsupported()
        }
        if (mode === 'rowSplat' && isRow(u)) return this.value(u, 'rowSplat', 1)
        if (elems(u) === 1) return this.value(u, 'wholeSplat', 1)
        if (mode === 'whole') {
          if (elems(u) !== elems(v)) throw new Unsupported()
          return this.value(u, 'whole', w)
        }
        // a value without the row axis, broadcast along it: no trailing axis is stretched when the sizes agree
        if (mode === 'row' && !isRow(u) && (u.aval.shape.length < v.aval.shape.length || u.aval.shape[0] === 1) && elems(u) === w)
          return this.value(u, 'whole', w)
        throw new Unsupported()
      }
      default:
        return this.elementwise(e, mode, w)
    }
  }

  protected elementwise(e: Eqn, mode: Mode, w: number): number {
    const c = this.c
    const ins = e.inputs.map((u) => this.value(u, mode, w))
    const out = this.fresh()
    const bin = (op: () => void) => {
      c.get(ins[0]!).get(ins[1]!)
      op()
      c.set(out)
    }
    switch (e.prim) {
      case 'add': bin(() => c.f32x4Add()); break
      case 'sub': bin(() => c.f32x4Sub()); break
      case 'mul': bin(() => c.f32x4Mul()); break
      case 'div': bin(() => c.f32x4Div()); break
      case 'max': case 'min': {
        // against a non-zero literal, pmax(x, c) = x < c ? c : x is the reference's max (NaN x kept,
        // c on ties, the same value): one instruction instead of the NaN-checking form
        const kind = e.prim
        const k = [1, 0].find((i) => { const l = this.literal(e.inputs[i]!); return l !== undefined && l !== 0 && !Number.isNaN(l) })
        if (k === undefined) this.nanMinMax(ins[0]!, ins[1]!, kind, out)
        else {
          c.get(ins[1 - k]!).get(ins[k]!)
          if (kind === 'max') c.f32x4Pmax()
          else c.f32x4Pmin()
          c.set(out)
        }
        break
      }
      case 'neg': c.get(ins[0]!).f32x4Neg().set(out); break
      case 'abs': c.get(ins[0]!).f32x4Abs().set(out); break
      case 'sqrt': c.get(ins[0]!).f32x4Sqrt().set(out); break
      case 'floor': c.get(ins[0]!).f32x4Floor().set(out); break
      case 'round': c.get(ins[0]!).f32x4Nearest().set(out); break
      case 'recip': c.vConstF32(splat4(1)).get(ins[0]!).f32x4Div().set(out); break
      case 'exp': this.exp(ins[0]!, out); break
      case 'log': this.log(e.inputs[0]!, ins[0]!, out, mode, w); break
      default:
        throw new Unsupported()
    }
    return out
  }

  /**
   * exp, skipped for a vector whose every lane is below -104 (its exp rounds to +0): softmax's
   * shifted logits mostly are, when its temperature is low.
   */
  protected exp(x: number, out: number): void {
    const c = this.c
    c.vConstF32(splat4(0)).set(out)
    c.get(x).vConstF32(splat4(EXP_ZERO_BELOW)).f32x4Lt().vNot().vAnyTrue().ifThen()
    c.get(x).set(out)
    emitExp(c, out, this.ms!)
    c.end()
  }

  /**
   * log; of max(y, c) for a literal c (entropy's clamp), lanes where y <= c take the float32 of
   * log(c) computed here, exactly the reference's, and a vector whose every lane is clamped
   * skips the polynomial (most of a peaked softmax's probabilities are below such a floor).
   */
  protected log(arg: Var, x: number, out: number, mode: Mode, w: number): void {
    const c = this.c
    const d = this.g.isStored(arg) ? undefined : this.g.def(arg)
    const lits = d?.prim === 'max' ? d.inputs.map((u) => this.literal(u)) : []
    const k = lits.findIndex((l) => l !== undefined)
    if (!d || k < 0) {
      c.get(x).set(out)
      emitLog(c, out, this.ms!)
      return
    }
    const y = this.value(d.inputs[1 - k]!, mode, w)
    const clamped = this.fresh()
    c.get(y).vConstF32(splat4(lits[k]!)).f32x4Le().set(clamped)
    c.vConstF32(splat4(Math.fround(Math.log(lits[k]!)))).set(out)
    c.get(clamped).vNot().vAnyTrue().ifThen()
    const t = this.fresh()
    c.get(x).set(t)
    emitLog(c, t, this.ms!)
    c.get(out).get(t).get(clamped).bitselect().set(out)
    c.end()
  }

  /** The float32 value of a one-element literal (through broadcasts and reshapes), if `v` is one. */
  protected literal(v: Var): number | undefined {
    if (this.g.isStored(v) || v.aval.dtype !== 'float32') return undefined
    const e = this.g.def(v)
    if (!e) return undefined
    if (e.prim === 'full') return Math.fround(e.params.value)
    if (e.prim === 'constant') return e.params.data.length === 1 ? Math.fround(Number(e.params.data[0])) : undefined
    if (e.prim === 'broadcast' || e.prim === 'reshape' || e.prim === 'stop_gradient') return this.literal(e.inputs[0]!)
    return undefined
  }

  /** The reference's max/min: NaN when either operand is NaN, else x > y ? x : y (x < y for min). */
  protected nanMinMax(x: number, y: number, kind: 'max' | 'min', out: number): void {
    const c = this.c
    c.get(x).get(y).get(x).get(y)
    if (kind === 'max') c.f32x4Gt()
    else c.f32x4Lt()
    c.bitselect()
    c.get(x).get(x).f32x4Ne().get(y).get(y).f32x4Ne().vOr().vOr().set(out)
  }
}
