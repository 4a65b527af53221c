import { describe, expect, test } from 'vitest'
import type { DType, ElemPrim, Prim } from '../src/index.js'
import {
  TesseraError, allPrims, elementwiseDtypes, elementwisePrims, isElemPrim, nonDifferentiablePrims, primFacts, scalarFn,
  scalarRules, transcendentalPrims,
} from '../src/index.js'

const sorted = (s: Iterable<Prim>) => [...s].sort()

describe('per-primitive tables', () => {
  test('the derived sets have the membership the hand-written copies had', () => {
    expect(sorted(transcendentalPrims)).toEqual(sorted(['exp', 'log', 'tanh', 'atanh', 'pow', 'sqrt', 'recip', 'div']))
    expect(sorted(nonDifferentiablePrims)).toEqual(
      sorted(['sign', 'floor', 'round', 'stop_gradient', 'idiv', 'mod', 'lt', 'le', 'eq', 'argmin', 'argmax', 'iota', 'full', 'constant', 'random_uniform']),
    )
    expect(sorted(elementwisePrims)).toEqual(sorted(allPrims.filter(isElemPrim)))
    expect(Object.keys(primFacts)).toEqual(allPrims)
  })

  test('every elementwise primitive has a scalar rule for each dtype its shape rule accepts', () => {
    const all: readonly DType[] = ['float32', 'int32', 'bool']
    for (const p of elementwisePrims) {
      // cast is keyed by its target dtype and where by its branches' dtype: both take any
      const dtypes = p === 'cast' || p === 'where' ? all : elementwiseDtypes[p]!
      for (const d of dtypes) expect(typeof scalarRules[p][d], `${p} on ${d}`).toBe('function')
    }
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
