import { describe, expect, test } from 'vitest'
import type { DType, ElemPrim, Prim } from '../src/index.js'
import {
  TesseraError, allPrims, costlyPrims, elementwiseDtypes, elementwisePrims, isElemPrim, nonDifferentiablePrims, primFacts, scalarFn,
  scalarRules, transcendentalPrims,
} from '../src/index.js'

const sorted = (s: Iterable<Prim>) => [...s].sort()

describe('per-primitive tables', () => {
  test('the derived sets have the membership the hand-written copies had', () => {
    expect(sorted(transcendentalPrims)).toEqual(sorted(['exp', 'log', 'tanh', 'atanh', 'pow', 'sqrt', 'recip', 'div']))
    expect(sorted(nonDifferentiablePrims)).toEqual(
      sorted(['sign', 'floor', 'round', 'stop_gradient', 'idiv', 'mod', 'lt', 'le', 'eq', 'argmin', 'argmax', 'iota', 'full', 'constant', 'random_uniform', 'axis_index']),
    )
    expect(sorted(elementwisePrims)).toEqual(sorted(allPrims.filter(isElemPrim)))
    // the planner's costly set (stored once, worth threads) had these members when it was written by hand
    expect(sorted(costlyPrims)).toEqual(sorted(['exp', 'log', 'tanh', 'atanh', 'pow']))
    expect(Object.keys(primFacts)).toEqual(allPrims)
  })

  test('elementwise shape rules accept exactly the dtypes their scalar rules define', () => {
    const F = ['float32'], N = ['float32', 'int32'], I = ['int32'], A = ['float32', 'int32', 'bool']
    // the operand dtypes each primitive has always accepted (shape rules read them from scalar.ts)
    const want: Record<ElemPrim, string[]> = {
      neg: N, exp: F, log: F, sqrt: F, tanh: F, atanh: F, abs: N, sign: N, floor: F, round: F, recip: F,
      cast: A, stop_gradient: A, add: N, sub: N, mul: N, div: F, idiv: I, mod: I, pow: F, max: N, min: N,
      lt: N, le: N, eq: A, where: A,
    }
    expect(elementwiseDtypes).toEqual(want)
    // cast is keyed by its target dtype and where by its branches' dtype: both define all three
    for (const p of elementwisePrims)
      for (const d of elementwiseDtypes[p]) expect(typeof scalarRules[p][d as DType], `${p} on ${d}`).toBe('function')
    expect(Object.keys(scalarRules).sort()).toEqual(sorted(elementwisePrims))
  })

  test('a dtype without a scalar rule is a backend error', () => {
    let err: unknown
    try {
      scalarFn('exp' as ElemPrim, 'int32')
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(TesseraError)
    expect((err as TesseraError).kind).toBe('backend')
    expect((err as TesseraError).message).toContain('exp on int32')
  })
})
