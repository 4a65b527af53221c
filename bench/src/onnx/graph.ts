/**
 * The benchmark's ONNX models as small plain records, written in workloads.ts and serialized by
 * encode.ts (which the ONNX runtime's process alone loads).
 */
/** TensorProto.DataType codes. */
export const DataType = { FLOAT: 1, INT32: 6, INT64: 7, BOOL: 9 } as const
export type DataTypeCode = (typeof DataType)[keyof typeof DataType]

export type Attr =
  | { readonly kind: 'int'; readonly value: number }
  | { readonly kind: 'float'; readonly value: number }
  | { readonly kind: 'ints'; readonly value: readonly number[] }

export interface NodeDef {
  readonly op: string
  readonly inputs: readonly string[]
  readonly outputs: readonly string[]
  readonly attrs?: Readonly<Record<string, Attr>>
}

export interface TensorDef {
  readonly name: string
  readonly dims: readonly number[]
  readonly type: DataTypeCode
  readonly data: Float32Array | Int32Array | BigInt64Array
}

export interface ValueDef {
  readonly name: string
  readonly type: DataTypeCode
  readonly dims: readonly number[]
}

export interface GraphDef {
  readonly name: string
  /** How the graph is written (the results' configuration notes; GraphProto.doc_string). */
  readonly doc?: string
  readonly nodes: readonly NodeDef[]
  readonly initializers: readonly TensorDef[]
  readonly inputs: readonly ValueDef[]
  readonly outputs: readonly ValueDef[]
}
