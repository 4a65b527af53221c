import fc from 'fast-check'
import type { Caps } from '../backend.js'
import type { DType, Shape } from '../dtype.js'
import type { HostTensor } from '../host-tensor.js'
import type { Prim } from '../prim.js'
import type { ProgramCase } from './arbitraries.js'
import { boolElem, floatIn, grid, hostArb, intIn, oneEqn, permArb, shapeArb } from './arbitraries.js'

/**
 * One generator per primitive: random shapes, params and inputs inside the primitive's safe
 * domain. The table is keyed by `Prim`, so a primitive without a case fails the type check
 * (and the suite checks the keys at run time too).
 *
 * Integers stay where every backend is exact: sums below caps.exactIntLimit, products of two
 * factors below its square root.
 */
export function primCases(caps: Caps): { readonly [P in Prim]: fc.Arbitrary<ProgramCase> } {
  const lim = Math.min(caps.exactIntLimit, 2 ** 31)
  const addInt = intIn(-Math.floor(lim / 4), Math.floor(lim / 4))
  const mulInt = intIn(-Math.floor(Math.sqrt(lim) / 2), Math.floor(Math.sqrt(lim) / 2))
  const smallInt = intIn(-1000, 1000)
  const anyFloat = floatIn(-1000, 1000)

  const elemFor = (dtype: DType, float: fc.Arbitrary<number> = anyFloat, int: fc.Arbitrary<number> = smallInt) =>
    dtype === 'float32' ? float : dtype === 'int32' ? int : boolElem

  const unary = <P extends Prim>(prim: P, elem: fc.Arbitrary<number>, dtype: DType = 'float32') =>
    shapeArb().chain((s) => hostArb(s, dtype, elem)).map((x) => oneEqn(prim, {} as never, [x]))

  /** Both operands share a shape (the tracer, not the primitive, broadcasts). */
  const binaryWith = <P extends Prim>(prim: P, dtype: DType, ea: fc.Arbitrary<number>, eb: fc.Arbitrary<number> = ea) =>
    shapeArb()
      .chain((s) => fc.tuple(hostArb(s, dtype, ea), hostArb(s, dtype, eb)))
      .map(([a, b]) => oneEqn(prim, {} as never, [a, b]))

  const numBinary = <P extends Prim>(prim: P, int: fc.Arbitrary<number>, float: fc.Arbitrary<number> = anyFloat) =>
    fc.oneof(binaryWith(prim, 'float32', float), binaryWith(prim, 'int32', int))

  const numUnary = <P extends Prim>(prim: P) => fc.oneof(unary(prim, anyFloat), unary(prim, smallInt, 'int32'))

  const comparison = <P extends Prim>(prim: P, dtypes: readonly DType[]) =>
    fc
      .constantFrom(...dtypes)
      .chain((dt) => binaryWith(prim, dt, elemFor(dt, grid(2, 4), intIn(-4, 4))))

  const anyDtype = fc.constantFrom<DType>('float32', 'int32', 'bool')

  const reduce = <P extends 'reduce_sum' | 'reduce_max' | 'reduce_min'>(prim: P) =>
    fc
      .tuple(shapeArb(0, 3), fc.constantFrom<DType>('float32', 'int32'))
      .chain(([s, dt]) =>
        fc.tuple(hostArb(s, dt, elemFor(dt, floatIn(-100, 100))), fc.subarray([...s.keys()])),
      )
      .map(([x, axes]) => oneEqn(prim, { axes } as never, [x]))

  const argReduce = <P extends 'argmin' | 'argmax'>(prim: P) =>
    fc
      .tuple(shapeArb(1, 3, 5), fc.constantFrom<DType>('float32', 'int32'))
      .chain(([s, dt]) =>
        // few distinct values, so ties are common and first-index breaking is exercised
        fc.tuple(hostArb(s, dt, elemFor(dt, fc.oneof(grid(2, 2), grid(100)), intIn(-3, 3))), fc.integer({ min: 0, max: s.length - 1 })),
      )
      .map(([x, axis]) => oneEqn(prim, { axis } as never, [x]))

  const withDtype = (f: (dt: DType) => fc.Arbitrary<ProgramCase>) => anyDtype.chain(f)

  return {
    neg: numUnary('neg'),
    exp: unary('exp', floatIn(-20, 20)),
    log: unary('log', floatIn(1e-3, 1e4)),
    sqrt: unary('sqrt', floatIn(0, 1e4)),
    tanh: unary('tanh', floatIn(-10, 10)),
    atanh: unary('atanh', floatIn(-0.99, 0.99)),
    abs: numUnary('abs'),
    sign: fc.oneof(unary('sign', fc.oneof(anyFloat, fc.constant(0))), unary('sign', intIn(-3, 3), 'int32')),
    floor: unary('floor', grid(1000)),
    round: unary('round', fc.oneof(grid(1000), grid(8, 2))),
    recip: unary('recip', fc.tuple(floatIn(1e-2, 1e3), fc.boolean()).map(([v, neg]) => (neg ? -v : v))),
    stop_gradient: withDtype((dt) => unary('stop_gradient', elemFor(dt), dt)),
    cast: fc
      .tuple(anyDtype, anyDtype)
      .chain(([from, to]) =>
        shapeArb()
          .chain((s) =>
            hostArb(s, from, elemFor(from, fc.oneof(floatIn(-1e6, 1e6), grid(4, 2), fc.constant(0)), intIn(-(lim / 2 - 1), lim / 2 - 1))),
          )
          .map((x) => oneEqn('cast', { dtype: to }, [x])),
      ),
    add: numBinary('add', addInt),
    sub: numBinary('sub', addInt),
    mul: numBinary('mul', mulInt, floatIn(-1e3, 1e3)),
    div: binaryWith('div', 'float32', anyFloat, fc.tuple(floatIn(1e-2, 1e3), fc.boolean()).map(([v, n]) => (n ? -v : v))),
    idiv: binaryWith('idiv', 'int32', intIn(-1000, 1000), intIn(-50, 50)),
    mod: binaryWith('mod', 'int32', intIn(-1000, 1000), intIn(-50, 50)),
    pow: fc.oneof(
      binaryWith('pow', 'float32', floatIn(1e-2, 10), floatIn(-3, 3)),
      // a negative base with an integral exponent is defined (torch.pow(-2., 3.) = -8)
      binaryWith('pow', 'float32', floatIn(-10, -0.1), intIn(-3, 3)),
    ),
    max: numBinary('max', smallInt, grid(4, 4)),
    min: numBinary('min', smallInt, grid(4, 4)),
    lt: comparison('lt', ['float32', 'int32']),
    le: comparison('le', ['float32', 'int32']),
    eq: comparison('eq', ['float32', 'int32', 'bool']),
    where: fc
      .tuple(shapeArb(), anyDtype)
      .chain(([s, dt]) => fc.tuple(hostArb(s, 'bool', boolElem), hostArb(s, dt, elemFor(dt)), hostArb(s, dt, elemFor(dt))))
      .map(([c, a, b]) => oneEqn('where', {}, [c, a, b])),
    reshape: fc
      .tuple(shapeArb(0, 3), anyDtype)
      .chain(([s, dt]) => fc.tuple(hostArb(s, dt, elemFor(dt)), reshapeTarget(s)))
      .map(([x, shape]) => oneEqn('reshape', { shape }, [x])),
    broadcast: fc
      .tuple(shapeArb(0, 3), anyDtype)
      .chain(([target, dt]) =>
        fc
          .tuple(fc.integer({ min: 0, max: target.length }), fc.array(fc.boolean(), { minLength: 3, maxLength: 3 }))
          .map(([rank, ones]) => target.slice(target.length - rank).map((d, i) => (ones[i] ? 1 : d)))
          .chain((src) => hostArb(src, dt, elemFor(dt)))
          .map((x) => oneEqn('broadcast', { shape: target }, [x])),
      ),
    transpose: fc
      .tuple(shapeArb(0, 4), anyDtype)
      .chain(([s, dt]) => fc.tuple(hostArb(s, dt, elemFor(dt)), permArb(s.length)))
      .map(([x, perm]) => oneEqn('transpose', { perm }, [x])),
    slice: fc
      .tuple(shapeArb(0, 3, 6), anyDtype)
      .chain(([s, dt]) => fc.tuple(hostArb(s, dt, elemFor(dt)), sliceParams(s)))
      .map(([x, p]) => oneEqn('slice', p, [x])),
    pad: fc
      .tuple(shapeArb(0, 3), anyDtype)
      .chain(([s, dt]) =>
        fc.tuple(
          hostArb(s, dt, elemFor(dt)),
          fc.array(fc.integer({ min: 0, max: 2 }), { minLength: s.length, maxLength: s.length }),
          fc.array(fc.integer({ min: 0, max: 2 }), { minLength: s.length, maxLength: s.length }),
          elemFor(dt, grid(4, 4), intIn(-5, 5)),
        ),
      )
      .map(([x, lo, hi, value]) => oneEqn('pad', { lo, hi, value }, [x])),
    concat: fc
      .tuple(shapeArb(1, 3), anyDtype, fc.integer({ min: 1, max: 3 }))
      .chain(([s, dt, k]) =>
        fc.integer({ min: 0, max: s.length - 1 }).chain((axis) =>
          fc
            .array(fc.integer({ min: 1, max: 3 }), { minLength: k, maxLength: k })
            .chain((sizes) => fc.tuple(...sizes.map((n) => hostArb(s.map((d, i) => (i === axis ? n : d)), dt, elemFor(dt)))))
            .map((xs) => oneEqn('concat', { axis }, xs)),
        ),
      ),
    reduce_sum: reduce('reduce_sum'),
    reduce_max: reduce('reduce_max'),
    reduce_min: reduce('reduce_min'),
    argmin: argReduce('argmin'),
    argmax: argReduce('argmax'),
    matmul: fc
      .tuple(shapeArb(0, 1, 3), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 5 }))
      .chain(([batch, m, k, n]) =>
        fc.tuple(hostArb([...batch, m, k], 'float32', floatIn(-10, 10)), hostArb([...batch, k, n], 'float32', floatIn(-10, 10))),
      )
      .map(([a, b]) => oneEqn('matmul', {}, [a, b])),
    gather: fc
      .tuple(shapeArb(1, 3), anyDtype, shapeArb(0, 2, 3))
      .chain(([s, dt, is]) =>
        fc.integer({ min: 0, max: s.length - 1 }).chain((axis) =>
          fc
            .tuple(hostArb(s, dt, elemFor(dt)), hostArb(is, 'int32', intIn(0, s[axis]! - 1)))
            .map(([x, idx]) => oneEqn('gather', { axis }, [x, idx])),
        ),
      ),
    iota: fc
      .tuple(shapeArb(1, 3, 5), fc.constantFrom<DType>('float32', 'int32'))
      .chain(([shape, dtype]) => fc.integer({ min: 0, max: shape.length - 1 }).map((axis) => oneEqn('iota', { shape, axis, dtype }, []))),
    full: fc
      .tuple(shapeArb(0, 3), anyDtype)
      .chain(([shape, dtype]) => elemFor(dtype).map((value) => oneEqn('full', { shape, value, dtype }, []))),
    constant: fc
      .tuple(shapeArb(0, 3), anyDtype)
      .chain(([shape, dtype]) => hostArb(shape, dtype, elemFor(dtype)))
      .map((t) => oneEqn('constant', { shape: t.shape, dtype: t.dtype, data: t.data }, [])),
    random_uniform: fc
      .tuple(shapeArb(0, 3, 8), hostArb([2], 'int32', fc.integer()))
      .map(([shape, key]) => oneEqn('random_uniform', { shape }, [key as HostTensor])),
    // collectives: the conformance suite checks that a backend refuses them by name and that one
    // rank (runCollective with soloCollective) gives the identity / rank 0
    all_reduce: fc
      .tuple(shapeArb(0, 3), fc.constantFrom<readonly [DType, 'sum' | 'mean']>(['float32', 'sum'], ['float32', 'mean'], ['int32', 'sum']))
      .chain(([shape, [dtype, op]]) => hostArb(shape, dtype, elemFor(dtype)).map((x) => oneEqn('all_reduce', { op }, [x]))),
    axis_index: fc.constant(oneEqn('axis_index', { size: 1 }, [])),
  }
}

/** A shape with the same number of elements: dims shuffled, some neighbours merged, 1s inserted. */
function reshapeTarget(s: Shape): fc.Arbitrary<number[]> {
  return fc
    .tuple(permArb(s.length), fc.array(fc.boolean(), { minLength: s.length, maxLength: s.length }), fc.integer({ min: 0, max: 2 }))
    .map(([perm, merge, ones]) => {
      const out: number[] = []
      perm.forEach((p, i) => {
        if (merge[i] && out.length > 0) out[out.length - 1]! *= s[p]!
        else out.push(s[p]!)
      })
      for (let i = 0; i < ones; i++) out.splice(i % (out.length + 1), 0, 1)
      return out
    })
}

function sliceParams(s: Shape): fc.Arbitrary<{ start: number[]; end: number[]; step: number[] }> {
  const axis = (d: number) =>
    fc
      .tuple(fc.integer({ min: 0, max: d }), fc.integer({ min: 0, max: d }), fc.integer({ min: 1, max: 3 }))
      .map(([a, b, st]) => [Math.min(a, b), Math.max(a, b), st] as const)
  return fc.tuple(...s.map(axis)).map((ax) => ({ start: ax.map((a) => a[0]), end: ax.map((a) => a[1]), step: ax.map((a) => a[2]) }))
}
