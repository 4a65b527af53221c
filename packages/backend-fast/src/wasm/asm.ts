/**
 * A tiny WebAssembly assembler: just the sections and instructions the generated kernels use.
 * Emitting bytes ourselves keeps the kernels specialized to literal sizes (the dot loop is
 * fully unrolled with constant memory offsets) without a build-time toolchain.
 */

export function uleb(n: number): number[] {
  const out: number[] = []
  do {
    let b = n & 0x7f
    n = Math.floor(n / 128)
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return out
}

export function sleb(n: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = n & 0x7f
    n >>= 7
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b)
      return out
    }
    out.push(b | 0x80)
  }
}

const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body]
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()]
const name = (s: string): number[] => vec([...s].map((c) => [c.charCodeAt(0)]))

export const I32 = 0x7f
export const V128 = 0x7b

/** Instruction builder for one function body. */
export class Code {
  readonly bytes: number[] = []
  private readonly localTypes: number[] = []
  constructor(readonly params: number) {}

  local(type: number): number {
    this.localTypes.push(type)
    return this.params + this.localTypes.length - 1
  }
  private op(...b: number[]) {
    for (const x of b) this.bytes.push(x)
    return this
  }
  private simd(code: number, ...rest: number[]) {
    return this.op(0xfd, ...uleb(code), ...rest)
  }
  get(l: number) { return this.op(0x20, ...uleb(l)) }
  set(l: number) { return this.op(0x21, ...uleb(l)) }
  tee(l: number) { return this.op(0x22, ...uleb(l)) }
  i32(n: number) { return this.op(0x41, ...sleb(n | 0)) }
  i32Add() { return this.op(0x6a) }
  i32Sub() { return this.op(0x6b) }
  i32Mul() { return this.op(0x6c) }
  i32LtU() { return this.op(0x49) }
  i32GtU() { return this.op(0x4b) }
  i32LeU() { return this.op(0x4d) }
  i32Store(offset = 0) { return this.op(0x36, 2, ...uleb(offset)) }
  loop() { return this.op(0x03, 0x40) }
  block() { return this.op(0x02, 0x40) }
  end() { return this.op(0x0b) }
  brIf(depth: number) { return this.op(0x0d, ...uleb(depth)) }
  br(depth: number) { return this.op(0x0c, ...uleb(depth)) }
  // SIMD
  vLoad(offset = 0) { return this.simd(0x00, 4, ...uleb(offset)) }
  vLoad32Splat(offset = 0) { return this.simd(0x09, 2, ...uleb(offset)) }
  vLoad64Splat(offset = 0) { return this.simd(0x0a, 3, ...uleb(offset)) }
  /** Stores lane `lane` (64 bits) of the vector on the stack. */
  vStore64Lane(offset: number, lane: number) { return this.simd(0x5b, 3, ...uleb(offset), lane) }
  /** Stores lane `lane` (32 bits) of the vector on the stack. */
  vStore32Lane(offset: number, lane: number) { return this.simd(0x5a, 2, ...uleb(offset), lane) }
  vStore(offset = 0) { return this.simd(0x0b, 4, ...uleb(offset)) }
  /** v128.const with the 16 bytes of `lanes` (little-endian, as typed arrays are here). */
  private vConst(lanes: Float32Array | Int32Array | Float64Array | BigInt64Array) {
    return this.simd(0x0c, ...new Uint8Array(lanes.buffer))
  }
  vConstF32(a: readonly number[]) { return this.vConst(new Float32Array(a)) }
  vConstI32(a: readonly number[]) { return this.vConst(new Int32Array(a)) }
  i32x4Splat() { return this.simd(0x11) }
  f32x4Splat() { return this.simd(0x13) }
  i32x4LtS() { return this.simd(0x39) }
  f32x4Eq() { return this.simd(0x41) }
  f32x4Ne() { return this.simd(0x42) }
  f32x4Lt() { return this.simd(0x43) }
  vOr() { return this.simd(0x50) }
  bitselect() { return this.simd(0x52) }
  f32x4Abs() { return this.simd(0xe0) }
  f32x4Neg() { return this.simd(0xe1) }
  f32x4Sqrt() { return this.simd(0xe3) }
  f32x4Add() { return this.simd(0xe4) }
  f32x4Sub() { return this.simd(0xe5) }
  f32x4Mul() { return this.simd(0xe6) }
  f32x4Div() { return this.simd(0xe7) }
  f32x4Min() { return this.simd(0xe8) }
  f32x4Max() { return this.simd(0xe9) }
  i32x4Add() { return this.simd(0xae) }
  i32x4MinS() { return this.simd(0xb6) }
  i32x4MinU() { return this.simd(0xb7) }
  /** b < a ? b : a per lane (one minps on x64, unlike f32x4.min's NaN rules). */
  f32x4Pmin() { return this.simd(0xea) }
  /** Rounds both float64 lanes to float32 (to nearest, ties to even) into lanes 0-1; lanes 2-3 are 0. */
  f32x4DemoteF64x2Zero() { return this.simd(0x5e) }
  f64x2Add() { return this.simd(0xf0) }
  f64x2Sub() { return this.simd(0xf1) }
  f64x2Mul() { return this.simd(0xf2) }
  /** b < a ? b : a per lane (a NaN in a is kept). */
  f64x2Pmin() { return this.simd(0xf6) }
  /** a < b ? b : a per lane (a NaN in a is kept). */
  f64x2Pmax() { return this.simd(0xf7) }
  /** Round to an integer, ties to even. */
  f64x2Nearest() { return this.simd(0x94) }
  /** Float32 lanes 0-1 widened to float64 (exactly). */
  f64x2PromoteLowF32x4() { return this.simd(0x5f) }
  /** Float64 lanes truncated (saturating) to int32 lanes 0-1; lanes 2-3 are 0. */
  i32x4TruncSatF64x2SZero() { return this.simd(0xfc) }
  i64x2ExtendLowI32x4S() { return this.simd(0xc7) }
  /** Shift count (an i32) on top of the vector. */
  i64x2Shl() { return this.simd(0xcb) }
  i64x2Add() { return this.simd(0xce) }
  /** 64 bits into lanes 0-1 (as two float32), lanes 2-3 zero. */
  vLoad64Zero(offset = 0) { return this.simd(0x5d, 3, ...uleb(offset)) }
  vConstF64(a: readonly [number, number]) { return this.vConst(new Float64Array(a)) }
  vConstI64(a: readonly [bigint, bigint]) { return this.vConst(new BigInt64Array(a)) }
  drop() { return this.op(0x1a) }
  /** Relaxed SIMD (a*b+c, rounded once where the machine has FMA): operands a, b, c on the stack. */
  f32x4RelaxedMadd() { return this.simd(0x105) }
  /** Relaxed SIMD bitselect (one blendvps on x64): exact where every mask lane is all ones or all zeros. */
  i32x4RelaxedLaneselect() { return this.simd(0x10b) }

  /** The encoded body: locals (one entry per local, simple and valid) then code. */
  encode(): number[] {
    const locals = vec(this.localTypes.map((t) => [1, t]))
    const body = [...locals, ...this.bytes, 0x0b]
    return [...uleb(body.length), ...body]
  }
}

/**
 * A module whose one memory is imported as env.memory (`pages` initial and maximum; shared, so
 * worker threads can run the same kernels on it, unless `shared` is false: kernels that only run
 * on the calling thread need no SharedArrayBuffer, which browsers give only to cross-origin
 * isolated pages) and whose functions are exported by name; every function takes `params` i32
 * arguments and returns nothing.
 */
export function assemble(pages: number, funcs: readonly { name: string; code: Code }[], shared = true): Uint8Array {
  const types = vec(funcs.map((f) => [0x60, ...vec(Array.from({ length: f.code.params }, () => [I32])), 0]))
  const memType = [shared ? 0x03 : 0x01, ...uleb(pages), ...uleb(pages)]
  const bytes = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, types),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, ...memType]])),
    ...section(3, vec(funcs.map((_, i) => uleb(i)))),
    ...section(7, vec(funcs.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]))),
    ...section(10, vec(funcs.map((f) => f.code.encode()))),
  ]
  return new Uint8Array(bytes)
}

/**
 * Whether this engine accepts relaxed SIMD (Node >= 22 and Chrome >= 114 by default; Node 20 with
 * --experimental-wasm-relaxed-simd): validates a function that uses f32x4.relaxed_madd.
 */
export function relaxedSimdSupported(): boolean {
  const c = new Code(0)
  c.vConstF32([1, 1, 1, 1]).vConstF32([1, 1, 1, 1]).vConstF32([1, 1, 1, 1]).f32x4RelaxedMadd().drop()
  return WebAssembly.validate(assemble(1, [{ name: 'f', code: c }]) as BufferSource)
}
