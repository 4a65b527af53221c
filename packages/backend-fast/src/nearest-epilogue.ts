import type { Epilogue } from '@tessera/core'
import type { Code } from './wasm/asm.js'

/**
 * Pushes the epilogue's value for one 4-lane vector: `dot` pushes the dot products, `term(k)` the
 * values of term k. Every op is a float32 SIMD op, so the exact kernel and the screening kernel
 * (nearest-screen.ts) compute each distance through the same ops.
 */
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
