import { Code, uleb } from './asm.js'

/** 16-byte constants at fixed addresses of a module's memory (written there by whoever makes the memory). */
export class ConstPool {
  private readonly entries = new Map<string, number>()
  readonly bytes: number[] = []
  constructor(readonly base: number, readonly capacity: number) {}
  /** The constant's address, or undefined when the pool is full (the constant is then built in place). */
  offsetOf(lanes: Uint8Array): number | undefined {
    const key = lanes.join(',')
    let off = this.entries.get(key)
    if (off === undefined) {
      if (this.bytes.length + 16 > this.capacity) return undefined
      off = this.base + this.bytes.length
      this.entries.set(key, off)
      this.bytes.push(...lanes)
    }
    return off
  }
}

export const F32 = 0x7d
export const F64 = 0x7c

/**
 * The instructions the generated row chains use beyond asm.ts's `Code` (kept here so that the
 * shared assembler only grows by what several kernels need): float32x4 comparisons and rounding,
 * integer lanes for building and reading float bits, lane stores, scalar float loads and stores,
 * calls and one atomic add.
 */
export class ChainCode extends Code {
  /**
   * With a pool, vector constants are loaded from memory: V8 builds a v128.const in place from
   * two 64-bit immediates at every use (three instructions; exp and log use about twenty), where
   * a load from a pool that stays in L1 is one.
   */
  constructor(params: number, private readonly pool?: ConstPool) {
    super(params)
  }
  private pooled(lanes: Float32Array | Int32Array | Float64Array): this {
    const off = this.pool?.offsetOf(new Uint8Array(lanes.buffer))
    if (off === undefined) {
      if (lanes instanceof Float32Array) return super.vConstF32(Array.from(lanes))
      if (lanes instanceof Int32Array) return super.vConstI32(Array.from(lanes))
      return super.vConstF64([lanes[0]!, lanes[1]!])
    }
    return this.i32(0).vLoad(off)
  }
  override vConstF32(a: readonly number[]) { return this.pooled(new Float32Array(a)) }
  override vConstI32(a: readonly number[]) { return this.pooled(new Int32Array(a)) }
  override vConstF64(a: readonly [number, number]) { return this.pooled(new Float64Array(a)) }
  private raw(...b: number[]): this {
    for (const x of b) this.bytes.push(x)
    return this
  }
  private vop(code: number, ...rest: number[]): this {
    return this.raw(0xfd, ...uleb(code), ...rest)
  }
  private static mem(align: number, offset: number): number[] {
    return [align, ...uleb(offset)]
  }
  // float32x4 comparisons (all-ones lanes where true)
  f32x4Gt() { return this.vop(0x44) }
  f32x4Le() { return this.vop(0x45) }
  f32x4Ge() { return this.vop(0x46) }
  f32x4Floor() { return this.vop(0x68) }
  f32x4Nearest() { return this.vop(0x6a) }
  /** b < a ? b : a is f32x4Pmin (asm.ts); this is a < b ? b : a. */
  f32x4Pmax() { return this.vop(0xeb) }
  vAnd() { return this.vop(0x4e) }
  vNot() { return this.vop(0x4d) }
  /** 1 when any bit of the vector is set. */
  vAnyTrue() { return this.vop(0x53) }
  i32x4GtS() { return this.vop(0x3b) }
  /** if (i32 on the stack) { ... } (closed by end()). */
  ifThen() { return this.raw(0x04, 0x40) }
  /** The else branch of an ifThen. */
  orElse() { return this.raw(0x05) }
  /** a & ~b. */
  vAndNot() { return this.vop(0x4f) }
  i32x4Shl() { return this.vop(0xab) }
  i32x4ShrS() { return this.vop(0xac) }
  i32x4ShrU() { return this.vop(0xad) }
  i32x4Sub() { return this.vop(0xb1) }
  i32x4TruncSatF32x4S() { return this.vop(0xf8) }
  f32x4ConvertI32x4S() { return this.vop(0xfa) }
  f64x2PromoteLow() { return this.vop(0x5f) }
  f64x2Add() { return this.vop(0xf0) }
  f64x2ExtractLane(lane: number) { return this.vop(0x21, lane) }
  f32x4ExtractLane(lane: number) { return this.vop(0x1f, lane) }
  /** Bytes of the two vectors on the stack (0-15 the first, 16-31 the second) picked by `lanes`. */
  vShuffle(lanes: readonly number[]) { return this.vop(0x0d, ...lanes) }
  /** Shuffle lanes that bring float32 lanes 2-3 of the first vector to lanes 0-1. */
  static readonly HIGH = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15] as const
  vStore32Lane(offset: number, lane: number) { return this.vop(0x5a, ...ChainCode.mem(2, offset), lane) }
  // scalars
  i32Load(offset = 0) { return this.raw(0x28, ...ChainCode.mem(2, offset)) }
  f32Load(offset = 0) { return this.raw(0x2a, ...ChainCode.mem(2, offset)) }
  f32Store(offset = 0) { return this.raw(0x38, ...ChainCode.mem(2, offset)) }
  f64Load(offset = 0) { return this.raw(0x2b, ...ChainCode.mem(3, offset)) }
  f64Store(offset = 0) { return this.raw(0x39, ...ChainCode.mem(3, offset)) }
  f64Add() { return this.raw(0xa0) }
  f32Const(x: number) { return this.raw(0x43, ...new Uint8Array(new Float32Array([x]).buffer)) }
  f64Const(x: number) { return this.raw(0x44, ...new Uint8Array(new Float64Array([x]).buffer)) }
  f32DemoteF64() { return this.raw(0xb6) }
  f64PromoteF32() { return this.raw(0xbb) }
  i32GeU() { return this.raw(0x4f) }
  i32LtS() { return this.raw(0x48) }
  i32Shl() { return this.raw(0x74) }
  i32ShrU() { return this.raw(0x76) }
  /** The first of two values when the i32 on top is non-zero, else the second. */
  select() { return this.raw(0x1b) }
  call(func: number) { return this.raw(0x10, ...uleb(func)) }
  /** i32.atomic.rmw.add: the address and the addend on the stack, the old value left. */
  i32AtomicAdd(offset = 0) { return this.raw(0xfe, 0x1e, ...ChainCode.mem(2, offset)) }
  i32AtomicStore(offset = 0) { return this.raw(0xfe, 0x17, ...ChainCode.mem(2, offset)) }
  i32AtomicLoad(offset = 0) { return this.raw(0xfe, 0x10, ...ChainCode.mem(2, offset)) }
}
