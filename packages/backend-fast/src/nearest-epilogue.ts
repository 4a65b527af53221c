import type { Epilogue } from '@tessera/core'
import type { Code } from './wasm/asm.js'
import type { TailOp } from './nearest-screen.js'

/**
 * Pushes the epilogue's value for one 4-lane vector: `dot` pushes the dot products, `term(k)` the
 * values of term k. Every op is a float32 SIMD op, so the exact kernel and the screening kernel
 * (nearest-screen.ts) compute each distance through the same ops.
 */
/**
 * `term(k)` for emitEpilogue: pushes the local holding term k's values, `rowVal(i)`'s for the i-th
 * row term, `colVals[i]` for the i-th column term (each in the memory order of `rowTerms` and
 * `colTerms`, the epilogue's term numbers).
 */
export function termLocals(c: Code, rowTerms: readonly number[], colTerms: readonly number[], rowVal: (i: number) => number, colVals: readonly number[]): (k: number) => void {
  return (k) => {
    const ri = rowTerms.indexOf(k)
    c.get(ri >= 0 ? rowVal(ri) : colVals[colTerms.indexOf(k)]!)
  }
}

/** Each lane of the first vector where the mask's lane is set, else of the second: one instruction with relaxed SIMD (the mask's lanes are all ones or all zeros). */
export function laneSelect(c: Code, relaxed: boolean): Code {
  return relaxed ? c.i32x4RelaxedLaneselect() : c.bitselect()
}

export function emitEpilogue(c: Code, x: Epilogue, dot: () => void, term: (k: number) => void): void {
  switch (x.op) {
    case 'dot': dot(); return
    case 'term': term(x.k); return
    case 'neg': emitEpilogue(c, x.a, dot, term); c.f32x4Neg(); return
    case 'abs': emitEpilogue(c, x.a, dot, term); c.f32x4Abs(); return
    case 'sqrt': emitEpilogue(c, x.a, dot, term); c.f32x4Sqrt(); return
    default:
      emitEpilogue(c, x.a, dot, term)
      emitEpilogue(c, x.b, dot, term)
      if (x.op === 'add') c.f32x4Add()
      else if (x.op === 'sub') c.f32x4Sub()
      else if (x.op === 'mul') c.f32x4Mul()
      else if (x.op === 'div') c.f32x4Div()
      else if (x.op === 'max') c.f32x4Max()
      else c.f32x4Min()
  }
}

/**
 * `lim` (a float32 local, at or above 0) stepped up one float32 at a time while the tail maps the
 * next value where it maps `lim`: afterwards every value above `lim` has a larger tail value.
 */
export function emitWiden(c: Code, tail: readonly TailOp[], lim: number, mapped: number, next: number): void {
  const apply = () => {
    for (const op of tail) if (op === 'sqrt') c.f32Sqrt()
    else c.f32Neg()
  }
  c.get(lim)
  apply()
  c.set(mapped)
  c.block()
  c.loop()
  c.get(lim).i32ReinterpretF32().i32(1).i32Add().f32ReinterpretI32().tee(next)
  apply()
  c.get(mapped).f32Eq().i32Eqz().brIf(1)
  c.get(next).set(lim)
  c.br(0)
  c.end()
  c.end()
}
