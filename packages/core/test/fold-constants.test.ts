import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import type { Aval, Prim, Program, Tensor } from '../src/index.js'
import { interpretProgram, primKind, printProgram, referenceCaps, simplify, traceOrThrow, typecheck } from '../src/index.js'
import type { ProgramCase } from '../src/testing/index.js'
import { primCases, randomProgramArb } from '../src/testing/index.js'

/** Results must be bit-identical: folding evaluates with the reference itself. */
function sameResults(p: Program, c: ProgramCase) {
  const s = simplify(p)
  expect(typecheck(s)._tag).toBe('Right')
  const want = interpretProgram(p, c.inputs)
  const got = interpretProgram(s, c.inputs)
  got.forEach((g, i) => {
    expect(g.shape).toEqual(want[i]!.shape)
    expect(g.dtype).toBe(want[i]!.dtype)
    expect(Array.from(g.data as ArrayLike<number>)).toEqual(Array.from(want[i]!.data as ArrayLike<number>))
  })
  return s
}

describe('constant folding evaluates with the reference', () => {
  test('random programs give the same results, typecheck, and lose their constant subexpressions', () => {
    fc.assert(
      fc.property(randomProgramArb, (c) => {
        const s = sameResults(c.program, c)
        expect(s.eqns.length).toBeLessThanOrEqual(c.program.eqns.length)
        const sourceOut = new Set(s.eqns.filter((e) => e.inputs.length === 0).map((e) => e.out.id))
        const foldable = s.eqns.filter((e) => e.inputs.length > 0 && e.inputs.every((v) => sourceOut.has(v.id)))
        expect(foldable.map((e) => e.prim)).toEqual([])
      }),
      { numRuns: 150 },
    )
  })

  test('every primitive case gives the same results', () => {
    const cases = primCases(referenceCaps)
    // collectives have no value without the other ranks (runCollective); distributed.test.ts checks they are never folded
    for (const [prim, arb] of Object.entries(cases))
      if (primKind[prim as Prim] !== 'collective')
        fc.assert(fc.property(arb as fc.Arbitrary<ProgramCase>, (c) => void sameResults(c.program, c)), { numRuns: 10 })
  })

  test('arithmetic on constants folds to one constant', () => {
    const { program } = traceOrThrow([{ shape: [3], dtype: 'float32' } as Aval], (x: Tensor) => {
      const b = x.builder
      const w = b.iota([3], 0, 'float32').mul(0.5).exp().add(b.constant([1, 2, 3], [3]))
      return x.mul(w).add(b.full([], 2).sqrt())
    })
    const s = sameResults(program, { program, inputs: [{ shape: [3], dtype: 'float32', data: new Float32Array([1, -2, 3]) }] })
    expect(printProgram(s)).toMatchInlineSnapshot(`
      "{ lambda a:f32[3] .
        b:f32[3] = constant[data=[2,3.648721218109131,5.7182817459106445] dtype="float32" shape=[3]]
        c:f32[3] = mul a b
        d:f32[3] = full[dtype="float32" shape=[3] value=1.4142135381698608]
        e:f32[3] = add c d
        in (e) }"
    `)
  })

  test('an out-of-range constant gather is left to fail at run time', () => {
    const { program } = traceOrThrow([{ shape: [2], dtype: 'float32' } as Aval], (x: Tensor) =>
      x.builder.constant([1, 2, 3], [3]).gather(x.builder.constant([5], [1], 'int32')).add(x.sum()),
    )
    const s = simplify(program)
    expect(s.eqns.some((e) => e.prim === 'gather')).toBe(true)
    expect(() => interpretProgram(s, [{ shape: [2], dtype: 'float32', data: new Float32Array(2) }])).toThrow(/index 5/)
  })
})
