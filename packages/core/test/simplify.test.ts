import fc from 'fast-check'
import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import type { Aval, Tensor } from '../src/index.js'
import { cse, foldConstants, printProgram, simplify, traceOrThrow, typecheck } from '../src/index.js'
import { randomProgramArb } from '../src/testing/index.js'

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })

describe('simplify: CSE, dead code, uniform values', () => {
  test('CSE merges repeated subexpressions; dead code goes', () => {
    const { program } = traceOrThrow([f32(2, 3)], (x: Tensor) => {
      const a = x.exp().sum(1)
      const b = x.exp().sum(1) // same structure, traced again
      x.tanh() // unused
      return a.add(b)
    })
    expect(printProgram(simplify(program))).toMatchInlineSnapshot(`
      "{ lambda a:f32[2,3] .
        b:f32[2,3] = exp a
        c:f32[2] = reduce_sum[axes=[1]] b
        d:f32[2] = add c c
        in (d) }"
    `)
  })

  test('movement of a full becomes a full of the new shape', () => {
    const { program } = traceOrThrow([f32(2, 3)], (x: Tensor) => x.add(2).mul(x.builder.full([3], -0).broadcastTo([2, 3])))
    expect(printProgram(simplify(program))).toMatchInlineSnapshot(`
      "{ lambda a:f32[2,3] .
        b:f32[2,3] = full[dtype="float32" shape=[2,3] value=2]
        c:f32[2,3] = add a b
        d:f32[2,3] = full[dtype="float32" shape=[2,3] value=-0]
        e:f32[2,3] = mul c d
        in (e) }"
    `)
  })

  test('params that differ only in -0 vs 0 or constant data are not merged', () => {
    const { program } = traceOrThrow([f32(2)], (x: Tensor) => [
      x.add(x.builder.full([2], 0)),
      x.add(x.builder.full([2], -0)),
      x.add(x.builder.constant([1, 2], [2])),
      x.add(x.builder.constant([1, 3], [2])),
    ])
    expect(cse(program).eqns.length).toBe(program.eqns.length)
  })

  test('random programs: simplified programs typecheck and are never longer', () => {
    fc.assert(
      fc.property(randomProgramArb, (c) => {
        const s = simplify(c.program)
        expect(E.isRight(typecheck(s))).toBe(true)
        expect(s.eqns.length).toBeLessThanOrEqual(c.program.eqns.length)
        expect(E.isRight(typecheck(foldConstants(c.program)))).toBe(true)
      }),
      { numRuns: 100 },
    )
  })
})
