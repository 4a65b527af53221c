/**
 * Serializes the benchmark's ONNX models (graph.ts) with protobufjs against ONNX's own schema
 * (onnx.proto3 of ONNX v1.20.1, vendored next to this file and embedded in the child bundle as
 * text). protobufjs is the maintained protobuf library for JavaScript; the `onnx-proto` package
 * (ONNX 1.10 definitions compiled for protobufjs 6, not updated since 2021) was the alternative.
 */
import protobuf from 'protobufjs'
import schema from './onnx.proto3'
import type { Attr, GraphDef, ValueDef } from './graph.js'

// AttributeProto.AttributeType codes
const ATTR_TYPE = { float: 1, int: 2, ints: 7 } as const

function attribute(name: string, a: Attr) {
  const base = { name, type: ATTR_TYPE[a.kind] }
  switch (a.kind) {
    case 'float':
      return { ...base, f: a.value }
    case 'int':
      return { ...base, i: a.value }
    case 'ints':
      return { ...base, ints: [...a.value] }
  }
}

const valueInfo = (v: ValueDef) => ({
  name: v.name,
  type: { tensorType: { elemType: v.type, shape: { dim: v.dims.map((d) => ({ dimValue: d })) } } },
})

let modelType: protobuf.Type | undefined
/** ModelProto from the vendored schema, parsed once per process. */
function modelProto(): protobuf.Type {
  modelType ??= protobuf.parse(schema, { keepCase: false }).root.lookupType('onnx.ModelProto')
  return modelType
}

/** Serialize a model (IR version 8, default-domain opset `opset`). */
export function encodeModel(g: GraphDef, opset = 17): Uint8Array {
  const Model = modelProto()
  const model = {
    irVersion: 8,
    producerName: 'tessera-bench',
    opsetImport: [{ domain: '', version: opset }],
    graph: {
      name: g.name,
      ...(g.doc ? { docString: g.doc } : {}),
      node: g.nodes.map((n, i) => ({
        input: [...n.inputs],
        output: [...n.outputs],
        name: `${n.op}_${i}`,
        opType: n.op,
        attribute: Object.entries(n.attrs ?? {}).map(([k, a]) => attribute(k, a)),
      })),
      initializer: g.initializers.map((t) => ({
        dims: [...t.dims],
        dataType: t.type,
        name: t.name,
        rawData: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength),
      })),
      input: g.inputs.map(valueInfo),
      output: g.outputs.map(valueInfo),
    },
  }
  // verify names the first field whose value does not fit the schema (a typo'd field is dropped by fromObject)
  const bad = Model.verify(model)
  if (bad) throw new Error(`ONNX model ${g.name}: ${bad}`)
  return Model.encode(Model.fromObject(model)).finish()
}
