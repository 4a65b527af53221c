import type { Epilogue } from '@tessera/core'
import { Code, F32, F64, I32, V128 } from './wasm/asm.js'
import type { TailOp } from './nearest-screen.js'
import { emitWiden } from './nearest-epilogue.js'

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
 * float32). Under a clamp and a tail of square roots (affineSplit) the verdicts compute the
 * threshold from the best code's bound clamped and widened through the tail (affineVerdictsCode).
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

/**
 * An epilogue as an affine part, an optional clamp from below by a column term (its values must be
 * one constant) and a tail of square roots and pairs of negations (nearest-screen.ts liftTail:
 * `inner` and `tail` are its result): VectorQuantize's -sqrt(max(d, 1e-8)) is d, clamped at 1e-8,
 * then sqrt, neg, neg. Undefined where the rest is not affine.
 */
export interface AffineSplit {
  readonly affine: Epilogue
  /** The term number of the clamp's column term. */
  readonly clamp?: number
  readonly tail: readonly TailOp[]
}

export function affineSplit(inner: Epilogue, tail: readonly TailOp[], colTerms: readonly number[]): AffineSplit | undefined {
  if (inner.op === 'max') {
    const [x, t] = isColTerm(inner.b, colTerms) ? [inner.a, inner.b] : [inner.b, inner.a]
    if (t.op === 'term' && isColTerm(t, colTerms) && affineEpilogue(x, colTerms)) return { affine: x, clamp: t.k, tail }
  }
  return affineEpilogue(inner, colTerms) ? { affine: inner, tail } : undefined
}

/** f64 slots of the per-call constants the verdicts read (after the float32 σ and clamp), then three per row term. */
const SLOT = { eta1: 0, eta0: 1, pd: 2, pc: 3, sd: 4, sc: 5, absA: 6 } as const
const ROW_SLOTS = 7
const PER_ROW = 3
/** Bytes of per-call constants at the module's affine info address, for `rowTerms` row terms. */
export const affineInfoBytes = (rowTerms: number): number => 8 + 8 * (ROW_SLOTS + PER_ROW * rowTerms)

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
  mem: ArrayBuffer, split: AffineSplit, rowTerms: readonly number[], colTerms: readonly number[],
  colAt: number, n: number, npad: number, colOut: number, info: number,
): boolean {
  const epi = split.affine
  const f32 = new Float32Array(mem)
  const nr = rowTerms.length
  const colMax: number[] = []
  const constant: (number | undefined)[] = []
  for (let ci = 0; ci < colTerms.length; ci++) {
    const at = colAt + ci * npad
    const max = largestMagnitude(f32, at, n)
    if (!Number.isFinite(max)) return false
    colMax.push(max)
    constant.push(allEqual(f32, at, n) ? f32[at]! : undefined)
  }
  const valueOf = (x: Epilogue): number | undefined => (x.op === 'term' && colTerms.includes(x.k) ? constant[colTerms.indexOf(x.k)] : undefined)
  // the real value's coefficients (dot, each column term), and the bounds: rounding (each op's
  // result magnitude times the factor its error is carried to the result with) and every
  // intermediate's magnitude (to rule out overflow)
  const coefCol = colTerms.map(() => 0)
  const coefRow = rowTerms.map(() => 0)
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
        if (ri >= 0) {
          m.r[ri] = 1
          coefRow[ri]! += w
        } else {
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
  const clamp = split.clamp === undefined ? -Infinity : constant[colTerms.indexOf(split.clamp)]
  if (failed || clamp === undefined || !(coefDot !== 0 && Number.isFinite(coefDot))) return false
  const a = Math.abs(coefDot)
  // s = σ scl acc + out_j, out_j = -C_j / |α| rounded to float32
  const k0 = writeColumnValues(f32, Float64Array.from(coefCol), colAt, npad, n, colOut, a)
  if (!Number.isFinite(k0)) return false
  f32.fill(-Infinity, colOut + n, colOut + npad)
  // relative rounding of one float32 op, with room for intermediates above their exact bounds
  const u = 2 ** -24 * (1 + 2 ** -16)
  const up = (x: number) => x * (1 + 2 ** -40)
  f32[info / 4] = -Math.sign(coefDot)
  f32[info / 4 + 1] = clamp
  const f64 = new Float64Array(mem, info + 8, ROW_SLOTS + PER_ROW * nr)
  // η: the conversion of acc, the rounding of -C_j / |α| (and of the f64 sum before it), and of s;
  // ρ / |α|: the affine part's rounding, in units of s
  f64[SLOT.eta1] = 2 ** -22
  f64[SLOT.eta0] = up(2 ** -22 * k0 * (1 + 2 ** -20) + 2 ** -130)
  f64[SLOT.pd] = up((u * rho.d) / a)
  f64[SLOT.pc] = up((u * rho.c + ops * 2 ** -149) / a)
  f64[SLOT.sd] = up(all.d)
  f64[SLOT.sc] = up(all.c)
  f64[SLOT.absA] = a
  for (let i = 0; i < nr; i++) {
    f64[ROW_SLOTS + PER_ROW * i] = up((u * rho.r[i]!) / a)
    f64[ROW_SLOTS + PER_ROW * i + 1] = up(all.r[i]!)
    f64[ROW_SLOTS + PER_ROW * i + 2] = coefRow[i]! / a
  }
  return true
}

/*
 * The loops over a call's columns are small functions of their own, with typed arrays and numbers
 * only: writeAffine runs once a call, and when its loops made it hot, V8 optimized the whole of it
 * (closures inlined, tens of ms on a compiler thread) and threw that away when the next call's
 * objects differed, again and again.
 */

/** The largest |v| of `n` floats from `at`; NaN when one of them is not finite. */
function largestMagnitude(f32: Float32Array, at: number, n: number): number {
  let max = 0
  for (let j = 0; j < n; j++) {
    const v = f32[at + j]!
    if (!Number.isFinite(v)) return NaN
    max = Math.max(max, Math.abs(v))
  }
  return max
}

function allEqual(f32: Float32Array, at: number, n: number): boolean {
  const v0 = f32[at]!
  for (let j = 1; j < n; j++) if (f32[at + j] !== v0) return false
  return true
}

/**
 * Writes fround(-C_j / a) for the n columns at float index `out` (C_j: the column terms, npad
 * apart from `at`, weighed by `coef`) and returns the largest |value|; NaN when one is not finite.
 */
function writeColumnValues(f32: Float32Array, coef: Float64Array, at: number, npad: number, n: number, out: number, a: number): number {
  let k0 = 0
  for (let j = 0; j < n; j++) {
    let cv = 0
    for (let ci = 0; ci < coef.length; ci++) if (coef[ci] !== 0) cv += coef[ci]! * f32[at + ci * npad + j]!
    const v = Math.fround(-cv / a)
    if (!Number.isFinite(v)) return NaN
    f32[out + j] = v
    k0 = Math.max(k0, Math.abs(v))
  }
  return k0
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
  /** The tail after the affine part and its clamp (affineSplit). */
  readonly tail: readonly TailOp[]
}

/**
 * `verdicts(rows, row, sp, out)` for affine screening, per row, in float64 with margins that cover
 * its own rounding. With E1 = err + η and Rh = ρ / |α| (from the row's scale and bound at sp and
 * sp + chunk * 4, and its row terms at row, chunk * 4 apart), the code with the largest s has its
 * affine part at most U = |α| (Rr - s_max + E1 + Rh) in float32 (Rr: the row terms' part over
 * |α|), rounded up to a float32; W is U clamped and widened through the tail (emitWiden), and a
 * code can win or tie only where its affine part's lower bound, |α| (Rr - s - E1 - Rh), is at most
 * W: s >= τ = Rr - E1 - Rh - W / |α|. The verdict is the column of the one lane whose best s is at
 * or above τ when no lane's second is, else -1; a row whose epilogue intermediates could exceed
 * 2^120, or under whose square root a value could be negative (a NaN distance wins), goes to
 * float32. For a -1 the state is rewritten in the bounded screening's form, which screenVerdict
 * reads: U 0 (NaN for the row in float32), least lower bounds 0 for candidate lanes and +Inf for
 * others, second lower bounds +Inf.
 */
export function affineVerdictsCode(s: AffineVerdictSpec): Code {
  const c = new Code(4)
  const [rows, rowPtr, spPtr, outPtr] = [0, 1, 2, 3]
  const r = c.local(I32), rp = c.local(I32), sp = c.local(I32), op = c.local(I32), vp = c.local(I32)
  const m1 = c.local(I32), m2 = c.local(I32), ok = c.local(I32), l = c.local(I32)
  const ad = c.local(F64), md = c.local(F64), e1 = c.local(F64), rh = c.local(F64), rr = c.local(F64), smax = c.local(F64), ua = c.local(F64), tau = c.local(F64)
  const w = c.local(F32), mapped = c.local(F32), next = c.local(F32)
  const b1 = c.local(V128), b2 = c.local(V128)
  const slot = (i: number) => s.affineInfo + 8 + 8 * i
  const load = (i: number) => c.i32(0).f64Load(slot(i))
  const row = (i: number) => c.get(rp).f32Load(i * s.chunk * 4).f64PromoteF32()
  // pushes the sum over row terms of slot(i, per row) times (|row term| or row term)
  const rowSum = (at: number, abs: boolean) => {
    for (let i = 0; i < s.rowTerms; i++) {
      load(ROW_SLOTS + PER_ROW * i + at)
      row(i)
      if (abs) c.f64Abs()
      c.f64Mul().f64Add()
    }
  }
  const sqrt = s.tail.includes('sqrt')
  const st = (which: number) => which * 16
  c.get(rowPtr).set(rp)
  c.get(spPtr).set(sp)
  c.get(outPtr).set(op)
  c.get(outPtr).i32(s.chunk * s.state).i32Add().set(vp)
  c.i32(0).set(r)
  c.loop()
  c.get(op).vLoad(st(1)).set(b1)
  c.get(op).vLoad(st(3)).set(b2)
  // the bound on |dot|, E1, Rh, Rr
  c.i32(s.info).f32Load(24).f64PromoteF32().get(sp).f32Load(0).f64PromoteF32().f64Mul().set(ad)
  c.get(sp).f32Load(s.chunk * 4).f64PromoteF32().tee(e1).get(ad).f64Add().set(md)
  c.get(e1)
  load(SLOT.eta1).get(ad).f64Mul().f64Add()
  load(SLOT.eta0).f64Add().set(e1)
  load(SLOT.pd).get(md).f64Mul()
  load(SLOT.pc).f64Add()
  rowSum(0, true)
  c.f64(1 + 2 ** -20).f64Mul().set(rh)
  c.f64(0)
  rowSum(2, false)
  c.set(rr)
  // every intermediate of the epilogue bounded (NaN fails too)
  load(SLOT.sd).get(md).f64Mul()
  load(SLOT.sc).f64Add()
  rowSum(1, true)
  c.f64(MAX_INTERMEDIATE).f64Le().set(ok)
  c.get(b1).f32x4ExtractLane(0).f64PromoteF32()
  for (let k = 1; k < 4; k++) c.get(b1).f32x4ExtractLane(k).f64PromoteF32().f64Max()
  c.set(smax)
  // U, rounded up to a float32 (a relative margin above half a float32 step), clamped
  load(SLOT.absA).get(rr).get(smax).f64Sub().get(e1).f64Add().get(rh).f64Add().f64Mul().set(ua)
  c.get(ua).get(ua).f64Abs().f64(2 ** -22).f64Mul().f64Add().f64(2 ** -140).f64Add().f32DemoteF64()
  c.i32(0).f32Load(s.affineInfo + 4).f32Max().set(w)
  if (sqrt) {
    // the least the affine part of any code can be, clamped: below 0, a square root could be NaN
    load(SLOT.absA).get(rr).get(smax).f64Sub().get(e1).f64Sub().get(rh).f64Sub().f64Mul()
    c.get(ua).f64Abs().f64(2 ** -22).f64Mul().f64Sub()
    c.i32(0).f32Load(s.affineInfo + 4).f64PromoteF32().f64Max().f64(0).f64Ge().get(ok).i32And().set(ok)
  }
  if (s.tail.length > 0) {
    c.block()
    c.get(w).f32(0).f32Ge().i32Eqz().brIf(0)
    emitWiden(c, s.tail, w, mapped, next)
    c.end()
  }
  // τ, lowered by a margin that covers its float64 rounding
  c.get(rr).get(e1).f64Sub().get(rh).f64Sub().get(w).f64PromoteF32()
  load(SLOT.absA).f64Div().tee(ua).f64Sub().set(tau)
  c.get(tau)
  c.get(rr).f64Abs().get(e1).f64Add().get(rh).f64Add().get(ua).f64Abs().f64Add().f64(2 ** -40).f64Mul().f64Sub().set(tau)
  c.get(tau).get(tau).f64Eq().get(ok).i32And().set(ok)
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

/** Sets `scale` to the row's σ scl in every lane (its scale at the address `spAt` pushes, σ from the per-call constants). */
export function affineRowScale(c: Code, scale: number, spAt: () => void, affineInfo: number): void {
  spAt()
  c.f32Load(0).i32(0).f32Load(affineInfo).f32Mul().f32x4Splat().set(scale)
}
