import { Code, I32, V128, assemble } from './asm.js'

/**
 * exp over float32 arrays in WebAssembly SIMD: two float32 values widened to a float64x2, exp
 * evaluated in float64 without tables (wasm SIMD has no gather), then rounded once to float32.
 * Accurate to a few float64 ulps (~1e-15 relative), so the float32 result equals
 * `Math.fround(Math.exp(x))` except where the exact value lies that close to a float32 rounding
 * midpoint, by one ulp: the same contract as the generated loops' expF32 (the backend's
 * transcendentalRtol = 2^-23), in about half the time of expF32 in a JS loop.
 *
 * The argument may be given as a prologue: a base array and float32 add/sub/mul/div ops, each
 * with a literal or a per-row value as its other operand (softmax's `logits * scale - rowMax`).
 * Those run as f32x4 ops, which round exactly as the reference's float32 ops do, so the argument
 * is never stored (in JS it cost a loop of its own: three Math.fround per element).
 *
 * Memory: `size` float32 inputs at 0, outputs after them, then one region of `size` per-row
 * values per row operand; each call maps `len <= size` elements (whole rows of `width`).
 */

/** Elements mapped per call by the runner (a row block's widest value is about 32K). */
export const MAP_CHUNK = 32768

/** One prologue op: value = value op operand (or operand op value when `swapped`). */
export interface ProOp {
  readonly op: 'add' | 'sub' | 'mul' | 'div'
  /** A float32 literal operand, or the index of a row operand (a value per row of `width` elements). */
  readonly lit?: number
  readonly row?: number
  readonly swapped: boolean
}

/** The exp map's prologue. */
export interface MapSpec {
  readonly ops: readonly ProOp[]
  /** Row operands the ops read. */
  readonly rowArrays: number
}

/** A compiled map: the module, its memory size, the elements per call and the spec it was built for. */
export interface MapModule {
  readonly module: WebAssembly.Module
  readonly pages: number
  readonly size: number
  readonly spec: MapSpec
}

// ln 2 split so that k * LN2_HI is exact for |k| < 2^20
const LN2_HI = 0.6931471803691238
const LN2_LO = 1.9082149292705877e-10

const splat = (x: number): [number, number] => [x, x]

/**
 * exp: x = k ln2 + r, |r| <= ln2/2, e^r by its degree-12 Taylor polynomial (remainder < 2e-16),
 * times 2^k built from bits. Each step is emitted for all U lane pairs before the next: the
 * Horner chain is serial within a pair, so independent pairs side by side keep the multiply and
 * add units busy. Leaves the U results on the stack, first pair deepest.
 */
function expBody(c: Code, x: readonly number[], t: readonly number[], kf: readonly number[]): void {
  const U = x.length
  const each = (f: (u: number) => void) => { for (let u = 0; u < U; u++) f(u) }
  // exp(x) in float32 is +Inf from 88.73 and +0 below -103.98 (half the smallest subnormal):
  // clamping to [-104, 89] keeps those results (e^89 overflows float32, e^-104 rounds to 0) and NaN
  each((u) => c.get(x[u]!).vConstF64(splat(89)).f64x2Pmin().vConstF64(splat(-104)).f64x2Pmax().set(x[u]!))
  each((u) => c.get(x[u]!).vConstF64(splat(1 / Math.LN2)).f64x2Mul().f64x2Nearest().set(kf[u]!))
  each((u) => c.get(x[u]!).get(kf[u]!).vConstF64(splat(LN2_HI)).f64x2Mul().f64x2Sub().get(kf[u]!).vConstF64(splat(LN2_LO)).f64x2Mul().f64x2Sub().set(x[u]!))
  let fact = 1
  const coef: number[] = [1]
  for (let i = 1; i <= 12; i++) coef.push(1 / (fact *= i))
  each((u) => c.vConstF64(splat(coef[12]!)).set(t[u]!))
  for (let i = 11; i >= 0; i--) each((u) => c.get(t[u]!).get(x[u]!).f64x2Mul().vConstF64(splat(coef[i]!)).f64x2Add().set(t[u]!))
  // 2^k: k in [-150, 128], (k + 1023) << 52 is a normal float64's bits
  each((u) => c.get(kf[u]!).i32x4TruncSatF64x2SZero().i64x2ExtendLowI32x4S().vConstI64([1023n, 1023n]).i64x2Add().i32(52).i64x2Shl().set(kf[u]!))
  each((u) => c.get(t[u]!).get(kf[u]!).f64x2Mul())
}

/** Lane pairs per loop iteration (independent chains side by side). */
const PAIRS = 4
/** Elements per loop iteration. */
export const MAP_STEP = 2 * PAIRS

/**
 * `run(len, width)`: out[i] = exp(prologue(in[i])) for i < len, PAIRS pairs per step. With row
 * operands the loop walks rows of `width` elements (a multiple of MAP_STEP) and splats each row's
 * values once; without, it walks `len` rounded up to a whole step (regions are whole steps long).
 */
function mapCode(spec: MapSpec, size: number): Code {
  const c = new Code(2)
  const len = 0, width = 1
  const p = c.local(I32), end = c.local(I32), rowEnd = c.local(I32), r = c.local(I32)
  const vs = (n: number) => Array.from({ length: n }, () => c.local(V128))
  const x = vs(PAIRS), a = vs(PAIRS), b = vs(PAIRS), rv = vs(spec.rowArrays)
  const pairs = () => {
    for (let u = 0; u < PAIRS; u++) {
      c.get(p).vLoad64Zero(8 * u)
      for (const o of spec.ops) {
        const operand = () => (o.row !== undefined ? c.get(rv[o.row]!) : c.vConstF32([o.lit!, o.lit!, o.lit!, o.lit!]))
        if (o.swapped) {
          c.set(x[u]!)
          operand()
          c.get(x[u]!)
        } else operand()
        if (o.op === 'add') c.f32x4Add()
        else if (o.op === 'sub') c.f32x4Sub()
        else if (o.op === 'mul') c.f32x4Mul()
        else c.f32x4Div()
      }
      c.f64x2PromoteLowF32x4().set(x[u]!)
    }
    expBody(c, x, a, b)
    // results on the stack, last pair on top
    for (let u = PAIRS - 1; u >= 0; u--) c.f32x4DemoteF64x2Zero().set(x[u]!)
    for (let u = 0; u < PAIRS; u++) c.get(p).get(x[u]!).vStore64Lane(4 * size + 8 * u, 0)
    c.get(p).i32(4 * MAP_STEP).i32Add().set(p)
  }
  c.get(len).i32(4).i32Mul().set(end)
  c.i32(0).set(p)
  if (spec.rowArrays === 0) {
    c.block().loop()
    c.get(end).get(p).i32LeU().brIf(1)
    pairs()
    c.br(0)
    c.end().end()
    return c
  }
  // rows: r is the byte offset of the row's values in each row region
  c.i32(0).set(r)
  c.block().loop()
  c.get(end).get(p).i32LeU().brIf(1)
  for (let j = 0; j < spec.rowArrays; j++) c.get(r).vLoad32Splat(8 * size + 4 * size * j).set(rv[j]!)
  c.get(p).get(width).i32(4).i32Mul().i32Add().set(rowEnd)
  c.block().loop()
  c.get(rowEnd).get(p).i32LeU().brIf(1)
  pairs()
  c.br(0)
  c.end().end()
  c.get(r).i32(4).i32Add().set(r)
  c.br(0)
  c.end().end()
  return c
}

/** A module for one map spec, mapping up to `size` elements per call (rounded up to whole steps). */
export function mathMapModule(spec: MapSpec, size: number): MapModule {
  const whole = Math.ceil(size / MAP_STEP) * MAP_STEP
  const pages = Math.max(1, Math.ceil((4 * whole * (2 + spec.rowArrays)) / 65536))
  const module = new WebAssembly.Module(assemble(pages, [{ name: 'run', code: mapCode(spec, whole) }]) as BufferSource)
  return { module, pages, size: whole, spec }
}

/** dst[0, len) = the map of base (and the row operands, one value per row of `width`). */
export type MathMap = (base: Float32Array, rows: readonly Float32Array[], dst: Float32Array, len: number, width: number) => void

/**
 * The JS side: copies inputs in and results out, whole rows at a time. Self-contained (worker
 * threads rebuild it from `mathMapFactory.toString()` and get the module through workerData).
 */
export function mathMapFactory(): (m: MapModule) => MathMap {
  return ({ module, pages, size, spec }) => {
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    const run = (new WebAssembly.Instance(module, { env: { memory } }).exports as { run: (len: number, width: number) => void }).run
    const inp = new Float32Array(memory.buffer, 0, size)
    const out = new Float32Array(memory.buffer, 4 * size, size)
    const rowMem = Array.from({ length: spec.rowArrays }, (_, j) => new Float32Array(memory.buffer, 4 * size * (2 + j), size))
    return (base, rows, dst, len, width) => {
      if (rows.length !== spec.rowArrays) throw new Error(`fast backend: an exp map was given ${rows.length} row operands, it reads ${spec.rowArrays}`)
      const chunk = spec.rowArrays > 0 ? Math.floor(size / width) * width : size
      if (chunk === 0) throw new Error(`fast backend: an exp map's rows of ${width} elements do not fit its ${size}`)
      for (let lo = 0; lo < len; lo += chunk) {
        const l = Math.min(chunk, len - lo)
        inp.set(base.subarray(lo, lo + l))
        for (let j = 0; j < rows.length; j++) rowMem[j]!.set(rows[j]!.subarray(lo / width, (lo + l) / width))
        run(l, width)
        dst.set(l === size ? out : out.subarray(0, l), lo)
      }
    }
  }
}
