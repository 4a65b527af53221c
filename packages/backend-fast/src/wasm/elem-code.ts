import { uleb } from './asm.js'
import { ChainCode } from './simd-ops.js'

/**
 * The instructions the elementwise kernels (elementwise.ts) use beyond ChainCode's: integer
 * lanes (int32 arithmetic wraps as the reference's `| 0` and Math.imul do) and integer
 * comparisons.
 */
export class ElemCode extends ChainCode {
  /** 0xfd and the SIMD opcode as an unsigned LEB128 (one or two bytes). */
  private simdOp(code: number): this {
    this.bytes.push(0xfd)
    if (code < 0x80) this.bytes.push(code)
    else this.bytes.push((code & 0x7f) | 0x80, code >> 7)
    return this
  }
  i32x4Eq() { return this.simdOp(0x37) }
  i32x4Ne() { return this.simdOp(0x38) }
  i32x4LeS() { return this.simdOp(0x3d) }
  i32x4Abs() { return this.simdOp(0xa0) }
  i32x4Neg() { return this.simdOp(0xa1) }
  i32x4Mul() { return this.simdOp(0xb5) }
  /** memory.atomic.notify: the address and the waiter count on the stack, the number woken left. */
  atomicNotify(offset = 0) {
    this.bytes.push(0xfe, 0x00, 2, ...uleb(offset))
    return this
  }
  // scalar int32 ops of the row sums
  i32DivU() {
    this.bytes.push(0x6e)
    return this
  }
  i32Load(offset = 0) {
    this.bytes.push(0x28, 2, ...uleb(offset))
    return this
  }
}
