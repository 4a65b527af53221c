/**
 * A minimal, deterministic protobuf writer for the parts of onnx.proto the benchmark models use
 * (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto). Field numbers
 * are onnx.proto's; every message is written field by field in a fixed order, so the same model
 * always gives the same bytes.
 */

class Writer {
  readonly bytes: number[] = []
  varint(n: number | bigint): this {
    let v = BigInt.asUintN(64, BigInt(n))
    do {
      let b = Number(v & 0x7fn)
      v >>= 7n
      if (v !== 0n) b |= 0x80
      this.bytes.push(b)
    } while (v !== 0n)
    return this
  }
  tag(field: number, wire: number): this {
    return this.varint((field << 3) | wire)
  }
  int(field: number, n: number | bigint): this {
    return this.tag(field, 0).varint(n)
  }
  bytesField(field: number, b: Uint8Array | readonly number[]): this {
    this.tag(field, 2).varint(b.length)
    for (const x of b) this.bytes.push(x)
    return this
  }
  str(field: number, s: string): this {
    return this.bytesField(field, new TextEncoder().encode(s))
  }
  msg(field: number, m: Writer): this {
    return this.bytesField(field, m.bytes)
  }
  float(field: number, x: number): this {
    this.tag(field, 5)
    for (const b of new Uint8Array(new Float32Array([x]).buffer)) this.bytes.push(b)
    return this
  }
}

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
  readonly nodes: readonly NodeDef[]
  readonly initializers: readonly TensorDef[]
  readonly inputs: readonly ValueDef[]
  readonly outputs: readonly ValueDef[]
}

function attribute(name: string, a: Attr): Writer {
  const w = new Writer().str(1, name)
  switch (a.kind) {
    case 'float':
      return w.float(2, a.value).int(20, 1)
    case 'int':
      return w.int(3, a.value).int(20, 2)
    case 'ints':
      for (const v of a.value) w.int(8, v)
      return w.int(20, 7)
  }
}

function tensor(t: TensorDef): Writer {
  const w = new Writer()
  for (const d of t.dims) w.int(1, d)
  w.int(2, t.type).str(8, t.name)
  return w.bytesField(9, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))
}

function valueInfo(v: ValueDef): Writer {
  const shape = new Writer()
  for (const d of v.dims) shape.msg(1, new Writer().int(1, d))
  const tensorType = new Writer().int(1, v.type).msg(2, shape)
  return new Writer().str(1, v.name).msg(2, new Writer().msg(1, tensorType))
}

function node(n: NodeDef, i: number): Writer {
  const w = new Writer()
  for (const x of n.inputs) w.str(1, x)
  for (const x of n.outputs) w.str(2, x)
  w.str(3, `${n.op}_${i}`).str(4, n.op)
  for (const [k, a] of Object.entries(n.attrs ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))) w.msg(5, attribute(k, a))
  return w
}

/** Serialize a model (IR version 8, default-domain opset `opset`). */
export function encodeModel(g: GraphDef, opset = 17): Uint8Array {
  const graph = new Writer()
  g.nodes.forEach((n, i) => graph.msg(1, node(n, i)))
  graph.str(2, g.name)
  for (const t of g.initializers) graph.msg(5, tensor(t))
  for (const v of g.inputs) graph.msg(11, valueInfo(v))
  for (const v of g.outputs) graph.msg(12, valueInfo(v))
  const model = new Writer()
    .int(1, 8)
    .str(2, 'tessera-bench')
    .msg(7, graph)
    .msg(8, new Writer().str(1, '').int(2, opset))
  return new Uint8Array(model.bytes)
}
