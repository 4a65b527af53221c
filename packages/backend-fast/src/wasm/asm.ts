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
export const F32 = 0x7d
export const V128 = 0x7b
export const F64 = 0x7c

/**
 * Instruction builder for one function body. Instructions push their bytes one at a time (no
 * argument spreads or arrays per instruction): the emitters run cold, on a plan's first compile.
 */
export class Code {
  readonly bytes: number[] = []
  private readonly localTypes: number[] = []
  constructor(readonly params: number) {}

  local(type: number): number {
    this.localTypes.push(type)
    return this.params + this.localTypes.length - 1
  }
  /** One byte. */
  private b(x: number) {
    this.bytes.push(x)
    return this
  }
  /** n as unsigned LEB128. */
  private u(n: number) {
    do {
      let b = n & 0x7f
      n = Math.floor(n / 128)
      if (n !== 0) b |= 0x80
      this.bytes.push(b)
    } while (n !== 0)
    return this
  }
  private all(xs: ArrayLike<number>) {
    for (let i = 0; i < xs.length; i++) this.bytes.push(xs[i]!)
    return this
  }
  private simd(code: number) {
    return this.b(0xfd).u(code)
  }
  get(l: number) { return this.b(0x20).u(l) }
  set(l: number) { return this.b(0x21).u(l) }
  tee(l: number) { return this.b(0x22).u(l) }
  i32(n: number) { return this.b(0x41).all(sleb(n | 0)) }
  i32Add() { return this.b(0x6a) }
  i32Sub() { return this.b(0x6b) }
  i32Mul() { return this.b(0x6c) }
  i32And() { return this.b(0x71) }
  i32Or() { return this.b(0x72) }
  i32Shl() { return this.b(0x74) }
  i32ShrU() { return this.b(0x76) }
  i32Eqz() { return this.b(0x45) }
  i32Ne() { return this.b(0x47) }
  i32Ctz() { return this.b(0x68) }
  i32Popcnt() { return this.b(0x69) }
  i32Load(offset = 0) { return this.b(0x28).b(2).u(offset) }
  /** memory.copy (bulk memory): destination, source and byte count on the stack. */
  memoryCopy() { return this.b(0xfc).b(0x0a).b(0).b(0) }
  /** a ? b : c with a (an i32) on top. */
  select() { return this.b(0x1b) }
  f32(x: number) { return this.b(0x43).all(new Uint8Array(new Float32Array([x]).buffer)) }
  f64(x: number) { return this.b(0x44).all(new Uint8Array(new Float64Array([x]).buffer)) }
  f32Load(offset = 0) { return this.b(0x2a).b(2).u(offset) }
  f32Store(offset = 0) { return this.b(0x38).b(2).u(offset) }
  i32Store16(offset = 0) { return this.b(0x3b).b(1).u(offset) }
  f32Abs() { return this.b(0x8b) }
  f32Neg() { return this.b(0x8c) }
  f32Sqrt() { return this.b(0x91) }
  f32Nearest() { return this.b(0x90) }
  f32Add() { return this.b(0x92) }
  f32Mul() { return this.b(0x94) }
  f32Div() { return this.b(0x95) }
  /** IEEE min and max: a NaN operand gives NaN. */
  f32Min() { return this.b(0x96) }
  f32Max() { return this.b(0x97) }
  f32Eq() { return this.b(0x5b) }
  f32Ne() { return this.b(0x5c) }
  f32Lt() { return this.b(0x5d) }
  f32Le() { return this.b(0x5f) }
  f32Ge() { return this.b(0x60) }
  f64Load(offset = 0) { return this.b(0x2b).b(3).u(offset) }
  f64PromoteF32() { return this.b(0xbb) }
  f64Abs() { return this.b(0x99) }
  f64Add() { return this.b(0xa0) }
  f64Sub() { return this.b(0xa1) }
  f64Mul() { return this.b(0xa2) }
  f64Div() { return this.b(0xa3) }
  f64Eq() { return this.b(0x61) }
  /** Rounds to the nearest float32 (ties to even). */
  f32DemoteF64() { return this.b(0xb6) }
  /** IEEE max: a NaN operand gives NaN. */
  f64Max() { return this.b(0xa5) }
  f64Lt() { return this.b(0x63) }
  f64Le() { return this.b(0x65) }
  f64Ge() { return this.b(0x66) }
  i32ReinterpretF32() { return this.b(0xbc) }
  f32ReinterpretI32() { return this.b(0xbe) }
  /** Float32 to int32, rounding toward zero, saturating (NaN gives 0). */
  i32TruncSatF32S() { return this.b(0xfc).u(0) }
  /** Calls function `index` of the module (its position in `assemble`'s list). */
  call(index: number) { return this.b(0x10).u(index) }
  i32LtU() { return this.b(0x49) }
  i32GtU() { return this.b(0x4b) }
  i32LeU() { return this.b(0x4d) }
  i32Store(offset = 0) { return this.b(0x36).b(2).u(offset) }
  loop() { return this.b(0x03).b(0x40) }
  block() { return this.b(0x02).b(0x40) }
  end() { return this.b(0x0b) }
  brIf(depth: number) { return this.b(0x0d).u(depth) }
  br(depth: number) { return this.b(0x0c).u(depth) }
  // SIMD
  vLoad(offset = 0) { return this.simd(0x00).b(4).u(offset) }
  vLoad32Splat(offset = 0) { return this.simd(0x09).b(2).u(offset) }
  vLoad64Splat(offset = 0) { return this.simd(0x0a).b(3).u(offset) }
  /** Stores lane `lane` (64 bits) of the vector on the stack. */
  vStore64Lane(offset: number, lane: number) { return this.simd(0x5b).b(3).u(offset).b(lane) }
  /** Stores lane `lane` (32 bits) of the vector on the stack. */
  vStore32Lane(offset: number, lane: number) { return this.simd(0x5a).b(2).u(offset).b(lane) }
  vStore(offset = 0) { return this.simd(0x0b).b(4).u(offset) }
  /** v128.const with the 16 bytes of `lanes` (little-endian, as typed arrays are here). */
  private vConst(lanes: Float32Array | Int32Array | Float64Array | BigInt64Array) {
    return this.simd(0x0c).all(new Uint8Array(lanes.buffer))
  }
  vConstF32(a: readonly number[]) { return this.vConst(new Float32Array(a)) }
  vConstI32(a: readonly number[]) { return this.vConst(new Int32Array(a)) }
  i32x4Splat() { return this.simd(0x11) }
  f32x4Splat() { return this.simd(0x13) }
  i32x4LtS() { return this.simd(0x39) }
  f32x4Eq() { return this.simd(0x41) }
  f32x4Ne() { return this.simd(0x42) }
  f32x4Lt() { return this.simd(0x43) }
  f32x4Le() { return this.simd(0x45) }
  f32x4Gt() { return this.simd(0x44) }
  /** 1 if any bit of the vector is set. */
  vAnyTrue() { return this.simd(0x53) }
  /** The top bit of each int32 lane, as bits 0-3 of an i32. */
  i32x4Bitmask() { return this.simd(0xa4) }
  vOr() { return this.simd(0x50) }
  vAnd() { return this.simd(0x4e) }
  f32x4ExtractLane(lane: number) { return this.simd(0x1f).b(lane) }
  /** Lane `lane` of the vector below replaced by the f32 on top. */
  f32x4ReplaceLane(lane: number) { return this.simd(0x20).b(lane) }
  i32x4ExtractLane(lane: number) { return this.simd(0x1b).b(lane) }
  /** Round to an integer, ties to even. */
  f32x4Nearest() { return this.simd(0x6a) }
  /** Float32 lanes to int32, rounding toward zero, saturating (NaN gives 0). */
  i32x4TruncSatF32x4S() { return this.simd(0xf8) }
  /** Two int32x4 (a then b) to int16x8 with signed saturation: a's lanes then b's. */
  i16x8NarrowI32x4S() { return this.simd(0x85) }
  /** Shift count (an i32) on top of the vector. */
  i32x4Shl() { return this.simd(0xab) }
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
  i32x4Sub() { return this.simd(0xb1) }
  i32x4MinS() { return this.simd(0xb6) }
  i32x4MinU() { return this.simd(0xb7) }
  /** b < a ? b : a per lane (one minps on x64, unlike f32x4.min's NaN rules). */
  f32x4Pmin() { return this.simd(0xea) }
  /** a < b ? b : a per lane (one maxps on x64). */
  f32x4Pmax() { return this.simd(0xeb) }
  /** Signed int32 lanes to float32 (rounded to nearest where |x| > 2^24). */
  f32x4ConvertI32x4S() { return this.simd(0xfa) }
  /** Products of adjacent int16 lanes summed in pairs into int32 lanes (one pmaddwd on x64). */
  i32x4DotI16x8S() { return this.simd(0xba) }
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
  vLoad64Zero(offset = 0) { return this.simd(0x5d).b(3).u(offset) }
  vConstF64(a: readonly [number, number]) { return this.vConst(new Float64Array(a)) }
  vConstI64(a: readonly [bigint, bigint]) { return this.vConst(new BigInt64Array(a)) }
  drop() { return this.b(0x1a) }
  /** Relaxed SIMD (a*b+c, rounded once where the machine has FMA): operands a, b, c on the stack. */
  f32x4RelaxedMadd() { return this.simd(0x105) }
  /** Relaxed SIMD bitselect (one blendvps on x64): exact where every mask lane is all ones or all zeros. */
  i32x4RelaxedLaneselect() { return this.simd(0x10b) }

  /** The encoded body's size and locals (one entry per local, simple and valid); `bytes` and an end follow them. */
  head(): number[] {
    const locals = uleb(this.localTypes.length)
    for (const t of this.localTypes) locals.push(1, t)
    return [...uleb(locals.length + this.bytes.length + 1), ...locals]
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
  // the function bodies are copied into the result whole (they can be large: no spreads, no flat())
  const heads = funcs.map((f) => f.code.head())
  const count = uleb(funcs.length)
  const codeLen = funcs.reduce((a, f, i) => a + heads[i]!.length + f.code.bytes.length + 1, count.length)
  const head = [
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
    ...section(1, types),
    ...section(2, vec([[...name('env'), ...name('memory'), 0x02, ...memType]])),
    ...section(3, vec(funcs.map((_, i) => uleb(i)))),
    ...section(7, vec(funcs.map((f, i) => [...name(f.name), 0x00, ...uleb(i)]))),
    10, ...uleb(codeLen), ...count,
  ]
  const out = new Uint8Array(head.length + codeLen - count.length)
  out.set(head)
  let at = head.length
  funcs.forEach((f, i) => {
    out.set(heads[i]!, at)
    at += heads[i]!.length
    out.set(f.code.bytes, at)
    at += f.code.bytes.length
    out[at++] = 0x0b
  })
  return out
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
