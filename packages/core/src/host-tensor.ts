import * as E from 'fp-ts/lib/Either.js'
import type { Aval, DType, Shape, TypedArrayOf } from './dtype.js'
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

/** An aval: a shape of non-negative integers (so -1 or NaN is never a size) and a known dtype. */
export function isAval(x: unknown): x is Aval {
  return (
    typeof x === 'object' && x !== null && Array.isArray((x as Aval).shape) &&
    (x as Aval).shape.every((d) => Number.isSafeInteger(d) && d >= 0) &&
    ['float32', 'int32', 'bool'].includes((x as Aval).dtype as string)
  )
}

const DTYPES: readonly DType[] = ['float32', 'int32', 'bool']
const INT32_MIN = -2147483648
const INT32_MAX = 2147483647

/** The typed-array class that stores each dtype; a host tensor's data must be exactly this class. */
const storageOf = (a: unknown): DType | undefined =>
  a instanceof Float32Array ? 'float32' : a instanceof Int32Array ? 'int32' : a instanceof Uint8Array ? 'bool' : undefined

/**
 * The dtype a typed array's class implies when none is given: float classes are float32, integer
 * classes int32, and Uint8Array (bool's storage) is bool. BigInt arrays have none.
 */
function inferDtype(a: ArrayBufferView): DType | undefined {
  if (a instanceof Float32Array || a instanceof Float64Array) return 'float32'
  if (a instanceof Uint8Array) return 'bool'
  if (a instanceof Int32Array || a instanceof Int16Array || a instanceof Int8Array || a instanceof Uint16Array || a instanceof Uint32Array || a instanceof Uint8ClampedArray) return 'int32'
  return undefined
}

/** A printable description of any value for error messages (NaN and Infinity print as such). */
export function describeValue(v: unknown): string {
  if (v === null) return 'null'
  if (Array.isArray(v)) return `a plain array of length ${v.length}`
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name}`
  if (typeof v === 'object') return 'an object'
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)
  return String(v)
}

function checkShape(shape: unknown, where: string): E.Either<TesseraError, readonly number[]> {
  if (!Array.isArray(shape) || shape.some((d) => typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0))
    return E.left(new TesseraError('input', where, `shape ${Array.isArray(shape) ? `[${shape.map(describeValue).join(',')}]` : describeValue(shape)} must be a list of non-negative integers`))
  return E.right(shape as number[])
}

/**
 * Build a host tensor from user data, checking it: the boundary where arrays enter Tessera.
 * Without `dtype`, a typed array's class gives it (Float32/Float64Array: float32; integer arrays:
 * int32; Uint8Array: bool) and a plain array is float32. Data of another class is converted, and
 * a value the dtype cannot hold (a non-integer or out-of-range int32, a bool other than 0/1) is a
 * Left naming the first such element. A typed array of exactly the dtype's class is used as is.
 */
export function hostTensor<D extends DType = 'float32'>(
  data: ArrayLike<number>,
  shape: Shape,
  dtype?: D,
): E.Either<TesseraError, HostTensor<D>> {
  const where = 'hostTensor'
  if (dtype !== undefined && !DTYPES.includes(dtype))
    return E.left(new TesseraError('dtype', where, `dtype ${describeValue(dtype)} is not one of float32, int32, bool`))
  const isView = ArrayBuffer.isView(data)
  if (!(Array.isArray(data) || (isView && !(data instanceof DataView))))
    return E.left(new TesseraError('input', where, `data must be a typed array or a plain array of numbers, got ${describeValue(data)}`))
  const inferred = isView ? inferDtype(data as unknown as ArrayBufferView) : 'float32'
  if (inferred === undefined)
    return E.left(new TesseraError('dtype', where, `data is a ${(data as object).constructor.name}, which no dtype stores (use Float32Array, Int32Array or Uint8Array)`))
  const dt = (dtype ?? inferred) as D
  const sh = checkShape(shape, where)
  if (E.isLeft(sh)) return sh
  const n = sizeOf(sh.right)
  if (data.length !== n)
    return E.left(new TesseraError('input', where, `data has ${data.length} elements but shape ${fmtShape(sh.right)} needs ${n}`))
  if (storageOf(data) === dt) {
    // the dtype's own storage class: no conversion, but bool storage must hold only 0/1
    if (dt === 'bool') {
      const i = (data as Uint8Array).findIndex((v) => v > 1)
      if (i >= 0) return E.left(new TesseraError('dtype', where, `element ${i} = ${data[i]} is not 0 or 1 but dtype is bool (pass dtype 'int32' for byte values)`))
    }
    return E.right({ shape: [...sh.right], dtype: dt, data: data as TypedArrayOf<D> })
  }
  const out = allocate(dt, n)
  for (let i = 0; i < n; i++) {
    const v = data[i] as unknown
    const num = typeof v === 'boolean' && dt === 'bool' ? Number(v) : v
    if (typeof num !== 'number')
      return E.left(new TesseraError('dtype', where, `element ${i} is ${describeValue(v)}, not a number`))
    if (dt === 'int32' && !(Number.isInteger(num) && num >= INT32_MIN && num <= INT32_MAX))
      return E.left(new TesseraError('dtype', where, `element ${i} = ${num} is not an integer in the int32 range but dtype is int32`))
    if (dt === 'bool' && num !== 0 && num !== 1)
      return E.left(new TesseraError('dtype', where, `element ${i} = ${num} is not 0 or 1 (or a boolean) but dtype is bool`))
    out[i] = num
  }
  return E.right({ shape: [...sh.right], dtype: dt, data: out as TypedArrayOf<D> })
}

/**
 * Check that a value passed where a host tensor goes is one: an object `{ shape, dtype, data }`
 * whose data is the dtype's typed-array class with as many elements as the shape needs. The
 * Left names the argument (`name`) and what is wrong with it.
 */
export function checkHostTensor(x: unknown, name: string, where: string): E.Either<TesseraError, HostTensor> {
  const bad = (msg: string) => E.left(new TesseraError('input', where, `${name} ${msg}`))
  if (typeof x !== 'object' || x === null || Array.isArray(x) || ArrayBuffer.isView(x))
    return bad(`must be a host tensor { shape, dtype, data } (tensorOf / hostTensor), got ${describeValue(x)}`)
  const { shape, dtype, data } = x as Partial<HostTensor>
  const sh = checkShape(shape, where)
  if (E.isLeft(sh)) return bad(`has a bad shape: ${sh.left.message.slice(where.length + 2)}`)
  if (typeof dtype !== 'string' || !DTYPES.includes(dtype as DType)) return bad(`has dtype ${describeValue(dtype)}; expected float32, int32 or bool`)
  if (storageOf(data) !== dtype) return bad(`has ${ArrayBuffer.isView(data) ? data.constructor.name : describeValue(data)} data for dtype ${dtype}`)
  if (data!.length !== sizeOf(sh.right)) return bad(`has ${data!.length} elements for shape ${fmtShape(sh.right)}`)
  return E.right(x as HostTensor)
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
  if (!Array.isArray(got)) return E.left(new TesseraError('input', where, `inputs must be an array of host tensors, got ${describeValue(got)}`))
  if (expected.length !== got.length)
    return E.left(new TesseraError('input', where, `expected ${expected.length} input(s), got ${got.length}`))
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!, e = expected[i]!
    const ok = checkHostTensor(g, `input ${i}`, where)
    if (E.isLeft(ok)) return ok
    if (g.dtype !== e.dtype || !shapeEq(g.shape, e.shape))
      return E.left(new TesseraError('input', where, `input ${i} is ${fmtAval(g)}; expected ${fmtAval(e)}`))
  }
  return E.right(undefined)
}

/**
 * Outputs a backend may hand to its caller: any output whose data shares memory with an input
 * (an input returned unchanged, or a no-op view of it) or with an earlier output is copied, so
 * writing into a result never changes the caller's arrays or another result.
 */
export function unaliasOutputs(inputs: readonly HostTensor[], outputs: readonly HostTensor[]): HostTensor[] {
  const seen = new Set<ArrayBufferLike>(inputs.map((t) => t.data.buffer))
  return outputs.map((t) => {
    if (seen.has(t.data.buffer)) return { shape: t.shape, dtype: t.dtype, data: t.data.slice() } as HostTensor
    seen.add(t.data.buffer)
    return t
  })
}
