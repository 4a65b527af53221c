import type { Epilogue } from '@tessera/core'
import { Code, F64, I32, V128 } from './wasm/asm.js'

/**
 * Affine screening: for epilogues that are a linear form in the dot product, the row terms and
 * the column terms (adds, subtracts, negations and products with a constant column term, as
 * squared euclidean distance `|x|² - 2x·c + |c|²` or a plain dot), each code's distance is
 * `-|α| q + (the same for every code of the row) + rounding`, with `q = σ dot - C_j / |α|`.
 * The screening kernel then ranks codes by one float per distance, `s = σ scl acc - C_j / |α|`
 * (one multiply-add on the integer dot product), instead of bounding each distance through the
 * epilogue, and the verdicts turn the bounds into one threshold per row:
 *
 * |s - q| <= err + η (err: the row's bound on the integer dot product, nearest-scale.ts; η: this
 * kernel's own rounding of s), and the float32 epilogue is within ρ of its real value (a bound
 * from the magnitudes of its intermediate values, below). The code the float32 kernel picks has
 * a distance at or below that of the code with the largest s, so its s is at least that largest
 * s minus Δ = 2 (err + η) + 2ρ / |α|. Every code at or above that threshold is a candidate, as
 * in the bounded screening (one: the answer; one per lane: rescored in float32; more: the row in
 * float32).
 */

/** Whether the epilogue is affine in the sense above, as far as its shape tells (constants are checked per call). */
export function affineEpilogue(epi: Epilogue, colTerms: readonly number[]): boolean {
  const dotFree = (x: Epilogue): boolean => x.op === 'term' || (x.op !== 'dot' && 'a' in x && dotFree(x.a) && (!('b' in x) || dotFree(x.b)))
  const ok = (x: Epilogue): boolean => {
    switch (x.op) {
      case 'dot':
      case 'term':
        return true
      case 'neg':
        return ok(x.a)
      case 'add':
      case 'sub':
        return ok(x.a) && ok(x.b)
      case 'mul':
        // one factor a column term (its values must be one constant)
        return (isColTerm(x.b, colTerms) && ok(x.a)) || (isColTerm(x.a, colTerms) && ok(x.b))
      default:
        return false
    }
  }
  const hasDot = (x: Epilogue): boolean => !dotFree(x)
  return ok(epi) && hasDot(epi)
}

const isColTerm = (x: Epilogue, colTerms: readonly number[]): boolean => x.op === 'term' && colTerms.includes(x.k)

/** f64 slots of the per-call constants the verdicts read (after an f32 σ and padding). */
const SLOT = { eta1: 0, eta0: 1, pd: 2, pc: 3, sd: 4, sc: 5 } as const
const ROW_SLOTS = 6
/** Bytes of per-call constants at the module's affine info address, for `rowTerms` row terms. */
export const affineInfoBytes = (rowTerms: number): number => 8 + 8 * (ROW_SLOTS + 2 * rowTerms)

/** A linear form over the dot product's magnitude bound, each row term's |value| and a constant. */
interface Form {
  d: number
  r: number[]
  c: number
}

/**
 * Writes this call's column values (-C_j / |α| for each of the n columns, -Inf for padding) at
 * float index `colOut` and the verdicts' constants at byte address `info` (affineInfoBytes),
 * from the column terms (float index `colAt`, npad apart). False when this call's epilogue is not
 * affine after all: a factor's column term is not one finite constant, a column term is not
 * finite, or the dot product's coefficient is zero. Allocates only a few small objects.
 */
export function writeAffine(
  mem: ArrayBuffer, epi: Epilogue, rowTerms: readonly number[], colTerms: readonly number[],
  colAt: number, n: number, npad: number, colOut: number, info: number,
): boolean {
  const f32 = new Float32Array(mem)
  const nr = rowTerms.length
  const colMax: number[] = []
  const constant: (number | undefined)[] = []
  for (let ci = 0; ci < colTerms.length; ci++) {
    const at = colAt + ci * npad
    const v0 = f32[at]!
    let max = 0, same = true
    for (let j = 0; j < n; j++) {
      const v = f32[at + j]!
      if (!Number.isFinite(v)) return false
      if (v !== v0) same = false
      max = Math.max(max, Math.abs(v))
    }
    colMax.push(max)
    constant.push(same ? v0 : undefined)
  }
  const valueOf = (x: Epilogue): number | undefined => (x.op === 'term' && colTerms.includes(x.k) ? constant[colTerms.indexOf(x.k)] : undefined)
  // the real value's coefficients (dot, each column term), and the bounds: rounding (each op's
  // result magnitude times the factor its error is carried to the result with) and every
  // intermediate's magnitude (to rule out overflow)
  const coefCol = colTerms.map(() => 0)
  let coefDot = 0
  const zero = (): Form => ({ d: 0, r: Array.from({ length: nr }, () => 0), c: 0 })
  const rho = zero(), all = zero()
  const addTo = (acc: Form, f: Form, w: number) => {
    acc.d += w * f.d
    acc.c += w * f.c
    for (let i = 0; i < nr; i++) acc.r[i]! += w * f.r[i]!
  }
  let ops = 0
  let failed = false
  const walk = (x: Epilogue, w: number): Form => {
    const m = zero()
    switch (x.op) {
      case 'dot':
        coefDot += w
        m.d = 1
        break
      case 'term': {
        const ri = rowTerms.indexOf(x.k)
        if (ri >= 0) m.r[ri] = 1
        else {
          const ci = colTerms.indexOf(x.k)
          coefCol[ci]! += w
          m.c = colMax[ci]!
        }
        break
      }
      case 'neg':
        return walk(x.a, -w)
      case 'add':
      case 'sub':
        addTo(m, walk(x.a, w), 1)
        addTo(m, walk(x.b, x.op === 'sub' ? -w : w), 1)
        ops++
        addTo(rho, m, Math.abs(w))
        break
      case 'mul': {
        const vb = valueOf(x.b), va = vb === undefined ? valueOf(x.a) : undefined
        const v = vb ?? va
        if (v === undefined) {
          failed = true
          return m
        }
        addTo(m, walk(vb !== undefined ? x.a : x.b, w * v), Math.abs(v))
        ops++
        addTo(rho, m, Math.abs(w))
        break
      }
      default:
        failed = true
    }
    addTo(all, m, 1)
    return m
  }
  walk(epi, 1)
  if (failed || !(coefDot !== 0 && Number.isFinite(coefDot))) return false
  const a = Math.abs(coefDot)
  // s = σ scl acc + out_j, out_j = -C_j / |α| rounded to float32
  let k0 = 0
  for (let j = 0; j < n; j++) {
    let cv = 0
    for (let ci = 0; ci < colTerms.length; ci++) if (coefCol[ci] !== 0) cv += coefCol[ci]! * f32[colAt + ci * npad + j]!
    const out = Math.fround(-cv / a)
    if (!Number.isFinite(out)) return false
    f32[colOut + j] = out
    k0 = Math.max(k0, Math.abs(out))
  }
  f32.fill(-Infinity, colOut + n, colOut + npad)
  // relative rounding of one float32 op, with room for intermediates above their exact bounds
  const u = 2 ** -24 * (1 + 2 ** -16)
  const up = (x: number) => x * (1 + 2 ** -40)
  f32[info / 4] = -Math.sign(coefDot)
  const f64 = new Float64Array(mem, info + 8, ROW_SLOTS + 2 * nr)
  // η: the conversion of acc, the rounding of -C_j / |α| (and of the f64 sum before it), and of s
  f64[SLOT.eta1] = 2 ** -22
  f64[SLOT.eta0] = up(2 ** -22 * k0 * (1 + 2 ** -20) + 2 ** -130)
  f64[SLOT.pd] = up((2 * u * rho.d) / a)
  f64[SLOT.pc] = up((2 * (u * rho.c + ops * 2 ** -149)) / a)
  f64[SLOT.sd] = up(all.d)
  f64[SLOT.sc] = up(all.c)
  for (let i = 0; i < nr; i++) {
    f64[ROW_SLOTS + 2 * i] = up((2 * u * rho.r[i]!) / a)
    f64[ROW_SLOTS + 2 * i + 1] = up(all.r[i]!)
  }
  return true
}

/** Intermediates above this could overflow float32 in the epilogue: such rows go to float32 whole. */
const MAX_INTERMEDIATE = 2 ** 120

export interface AffineVerdictSpec {
  readonly chunk: number
  /** Byte address of the codebook's scaling values (nearest-scale.ts INFO_BYTES; the integer dot bound is its float at 24). */
  readonly info: number
  /** Byte address of the per-call constants (writeAffine). */
  readonly affineInfo: number
  readonly rowTerms: number
  /** Bytes of screening state per row (nearest-screen.ts SCREEN_STATE). */
  readonly state: number
}

/**
 * `verdicts(rows, row, sp, out)` for affine screening: per row, Δ from its scale and bound (at
 * sp, sp + chunk * 4) and its row terms (at row, chunk * 4 apart), in float64 rounded up by a
 * margin that covers the float64 ops; the threshold τ = (largest s) - Δ; the verdict (the
 * column of the one lane whose best s is at or above τ, when no lane's second is) or -1. For a
 * -1, the state is rewritten in the bounded screening's form, which screenVerdict reads: U 0 (NaN
 * for the row in float32), least lower bounds 0 for candidate lanes and +Inf for others, second
 * lower bounds +Inf.
 */
export function affineVerdictsCode(s: AffineVerdictSpec): Code {
  const c = new Code(4)
  const [rows, rowPtr, spPtr, outPtr] = [0, 1, 2, 3]
  const r = c.local(I32), rp = c.local(I32), sp = c.local(I32), op = c.local(I32), vp = c.local(I32)
  const m1 = c.local(I32), m2 = c.local(I32), ok = c.local(I32), l = c.local(I32)
  const ad = c.local(F64), md = c.local(F64), e = c.local(F64), delta = c.local(F64), tau = c.local(F64), smax = c.local(F64)
  const b1 = c.local(V128), b2 = c.local(V128)
  const slot = (i: number) => s.affineInfo + 8 + 8 * i
  const st = (which: number) => which * 16
  c.get(rowPtr).set(rp)
  c.get(spPtr).set(sp)
  c.get(outPtr).set(op)
  c.get(outPtr).i32(s.chunk * s.state).i32Add().set(vp)
  c.i32(0).set(r)
  c.loop()
  c.get(op).vLoad(st(1)).set(b1)
  c.get(op).vLoad(st(3)).set(b2)
  // the bound on |dot|, and Δ
  c.i32(s.info).f32Load(24).f64PromoteF32().get(sp).f32Load(0).f64PromoteF32().f64Mul().set(ad)
  c.get(sp).f32Load(s.chunk * 4).f64PromoteF32().set(e)
  c.get(ad).get(e).f64Add().set(md)
  c.get(e).i32(0).f64Load(slot(SLOT.eta1)).get(ad).f64Mul().f64Add().i32(0).f64Load(slot(SLOT.eta0)).f64Add().f64(2).f64Mul()
  c.i32(0).f64Load(slot(SLOT.pd)).get(md).f64Mul().f64Add()
  c.i32(0).f64Load(slot(SLOT.pc)).f64Add()
  for (let i = 0; i < s.rowTerms; i++) c.i32(0).f64Load(slot(ROW_SLOTS + 2 * i)).get(rp).f32Load(i * s.chunk * 4).f64PromoteF32().f64Abs().f64Mul().f64Add()
  c.f64(1 + 2 ** -20).f64Mul().set(delta)
  // every intermediate of the epilogue bounded (NaN fails too), and Δ finite
  c.i32(0).f64Load(slot(SLOT.sd)).get(md).f64Mul().i32(0).f64Load(slot(SLOT.sc)).f64Add()
  for (let i = 0; i < s.rowTerms; i++) c.i32(0).f64Load(slot(ROW_SLOTS + 2 * i + 1)).get(rp).f32Load(i * s.chunk * 4).f64PromoteF32().f64Abs().f64Mul().f64Add()
  c.f64(MAX_INTERMEDIATE).f64Le()
  c.get(delta).f64(Infinity).f64Lt().i32And().set(ok)
  c.get(b1).f32x4ExtractLane(0).f64PromoteF32()
  for (let k = 1; k < 4; k++) c.get(b1).f32x4ExtractLane(k).f64PromoteF32().f64Max()
  c.set(smax)
  c.get(smax).get(delta).f64Sub().set(tau)
  c.i32(0).set(m1)
  c.i32(0).set(m2)
  for (let k = 0; k < 4; k++) {
    c.get(m1).get(b1).f32x4ExtractLane(k).f64PromoteF32().get(tau).f64Ge().i32(k).i32Shl().i32Or().set(m1)
    c.get(m2).get(b2).f32x4ExtractLane(k).f64PromoteF32().get(tau).f64Ge().i32(k).i32Shl().i32Or().set(m2)
  }
  c.get(m2).i32Eqz().get(ok).i32And().set(ok)
  // the verdict
  c.block()
  c.block()
  c.get(ok).i32Eqz().brIf(0)
  c.get(m1).i32Popcnt().i32(1).i32Ne().brIf(0)
  c.get(vp).get(op).get(m1).i32Ctz().i32(4).i32Mul().i32Add().i32Load(st(2)).i32Store(0)
  c.br(1)
  c.end()
  c.get(vp).i32(-1).i32Store(0)
  c.end()
  // the state in the bounded form (screenVerdict)
  c.get(op).f32(0).f32(NaN).get(ok).select().f32x4Splat().vStore(st(0))
  c.get(op).vConstF32([Infinity, Infinity, Infinity, Infinity]).vStore(st(3))
  c.i32(0).set(l)
  c.loop()
  c.get(op).get(l).i32(4).i32Mul().i32Add().f32(0).f32(Infinity).get(m1).get(l).i32ShrU().i32(1).i32And().select().f32Store(st(1))
  c.get(l).i32(1).i32Add().tee(l).i32(4).i32LtU().brIf(0)
  c.end()
  c.get(rp).i32(4).i32Add().set(rp)
  c.get(sp).i32(4).i32Add().set(sp)
  c.get(vp).i32(4).i32Add().set(vp)
  c.get(op).i32(s.state).i32Add().set(op)
  c.get(r).i32(1).i32Add().tee(r).get(rows).i32LtU().brIf(0)
  c.end()
  return c
}

/**
 * The affine kernel's work per 4 columns of one row (nearest-screen.ts calls it with the row's
 * locals): s = σ scl acc + out_j (out_j at `outAt`), then the lane's largest s, its column and its
 * second largest. Padding columns have out_j = -Inf: never a candidate.
 */
export function emitAffineStep(
  c: Code, relaxed: boolean, v: { readonly acc: number; readonly scale: number; readonly b1: number; readonly b2: number; readonly i1: number; readonly s: number; readonly less: number },
  outAt: () => void, index: () => void, select: () => void,
): void {
  c.get(v.acc).f32x4ConvertI32x4S().get(v.scale)
  if (relaxed) {
    outAt()
    c.f32x4RelaxedMadd()
  } else {
    c.f32x4Mul()
    outAt()
    c.f32x4Add()
  }
  c.set(v.s)
  c.get(v.b2).get(v.b1).get(v.s).f32x4Pmin().f32x4Pmax().set(v.b2)
  c.get(v.s).get(v.b1).f32x4Gt().set(v.less)
  c.get(v.b1).get(v.s).f32x4Pmax().set(v.b1)
  index()
  c.get(v.i1).get(v.less)
  select()
  c.set(v.i1)
}

/** Locals the affine step needs beyond the screening kernel's: the row's σ scl, splat. */
export function affineRowScale(c: Code, scale: number, spAt: () => void, affineInfo: number): void {
  spAt()
  c.f32Load(0).i32(0).f32Load(affineInfo).f32Mul().f32x4Splat().set(scale)
}
