import * as E from 'fp-ts/lib/Either.js'
import type { AnyTypedArray, Aval, DType, Shape, TypedArrayOf } from './dtype.js'
import { allocate, fmtAval, fmtShape, shapeEq, sizeOf } from './dtype.js'
import { TesseraError } from './error.js'

/** A concrete tensor on the host: a typed array in row-major order with its shape. */
export interface HostTensor<D extends DType = DType> {
  readonly shape: Shape
  readonly dtype: D
  readonly data: TypedArrayOf<D>
}

export function isHostTensor(x: unknown): x is HostTensor {
  return (
    typeof x === 'object' && x !== null && Array.isArray((x as HostTensor).shape) &&
    typeof (x as HostTensor).dtype === 'string' && ArrayBuffer.isView((x as HostTensor).data)
  )
}

export function isAval(x: unknown): x is Aval {
  return (
    typeof x === 'object' && x !== null && Array.isArray((x as Aval).shape) &&
    ['float32', 'int32', 'bool'].includes((x as Aval).dtype as string)
  )
}

const arrayDtype = (a: AnyTypedArray): DType =>
  a instanceof Float32Array ? 'float32' : a instanceof Int32Array ? 'int32' : 'bool'

/**
 * Build a host tensor from user data, checking it: the boundary where arrays enter Tessera.
 * Plain arrays are converted (and rounded to float32 where the dtype says so).
 */
export function hostTensor<D extends DType = 'float32'>(
  data: ArrayLike<number>,
  shape: Shape,
  dtype?: D,
): E.Either<TesseraError, HostTensor<D>> {
  const dt = (dtype ?? (ArrayBuffer.isView(data) ? arrayDtype(data as AnyTypedArray) : 'float32')) as D
  if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0))
    return E.left(new TesseraError('input', 'hostTensor', `shape ${JSON.stringify(shape)} must be non-negative integers`))
  if (data.length !== sizeOf(shape))
    return E.left(
      new TesseraError('input', 'hostTensor', `data has ${data.length} elements but shape ${fmtShape(shape)} needs ${sizeOf(shape)}`),
    )
  if (ArrayBuffer.isView(data) && arrayDtype(data as AnyTypedArray) === dt)
    return E.right({ shape: [...shape], dtype: dt, data: data as TypedArrayOf<D> })
  const out = allocate(dt, data.length)
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!
    if (dt === 'int32' && !Number.isInteger(v))
      return E.left(new TesseraError('dtype', 'hostTensor', `element ${i} = ${v} is not an integer but dtype is int32`))
    out[i] = dt === 'bool' ? (v ? 1 : 0) : v
  }
  return E.right({ shape: [...shape], dtype: dt, data: out as TypedArrayOf<D> })
}

/** As hostTensor, throwing the TesseraError: for tests and scripts that want exceptions. */
export function tensorOf<D extends DType = 'float32'>(data: ArrayLike<number>, shape: Shape, dtype?: D): HostTensor<D> {
  const r = hostTensor(data, shape, dtype)
  if (E.isLeft(r)) throw r.left
  return r.right
}

export function zerosHost<D extends DType>(shape: Shape, dtype: D): HostTensor<D> {
  return { shape: [...shape], dtype, data: allocate(dtype, sizeOf(shape)) as TypedArrayOf<D> }
}

/** Check that host values fit what a program expects; names the input and both avals. */
export function checkAvals(where: string, expected: readonly Aval[], got: readonly HostTensor[]): E.Either<TesseraError, void> {
  if (expected.length !== got.length)
    return E.left(new TesseraError('input', where, `expected ${expected.length} input(s), got ${got.length}`))
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!, e = expected[i]!
    if (!isHostTensor(g)) return E.left(new TesseraError('input', where, `input ${i} is not a host tensor`))
    if (g.dtype !== e.dtype || !shapeEq(g.shape, e.shape))
      return E.left(new TesseraError('input', where, `input ${i} is ${fmtAval(g)}; expected ${fmtAval(e)}`))
    if (g.data.length !== sizeOf(g.shape))
      return E.left(new TesseraError('input', where, `input ${i} has ${g.data.length} elements for shape ${fmtShape(g.shape)}`))
  }
  return E.right(undefined)
}
