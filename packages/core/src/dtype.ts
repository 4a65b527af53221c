/** Element types. Booleans are stored as bytes (0/1); int32 indices are exact integers. */
export type DType = 'float32' | 'int32' | 'bool'

export type Shape = readonly number[]

/** The abstract value of a tensor: what is known about it when a program is built. */
export interface Aval {
  readonly shape: Shape
  readonly dtype: DType
}

export type TypedArrayOf<D extends DType> = D extends 'float32'
  ? Float32Array
  : D extends 'int32'
    ? Int32Array
    : Uint8Array

export type AnyTypedArray = Float32Array | Int32Array | Uint8Array

export const dtypeShort: Readonly<Record<DType, string>> = { float32: 'f32', int32: 'i32', bool: 'bool' }

export const sizeOf = (shape: Shape): number => shape.reduce((a, b) => a * b, 1)

export const shapeEq = (a: Shape, b: Shape): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i])

export const fmtShape = (s: Shape): string => `[${s.join(',')}]`

export const fmtAval = (a: Aval): string => `${dtypeShort[a.dtype]}${fmtShape(a.shape)}`

export function allocate(dtype: DType, size: number): AnyTypedArray {
  switch (dtype) {
    case 'float32':
      return new Float32Array(size)
    case 'int32':
      return new Int32Array(size)
    case 'bool':
      return new Uint8Array(size)
  }
}

/** Row-major strides of a shape. */
export function stridesOf(shape: Shape): number[] {
  const st = new Array<number>(shape.length)
  let s = 1
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s
    s *= shape[i]!
  }
  return st
}
