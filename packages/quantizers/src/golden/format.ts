import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { HostTensor } from '@tessera/core'
import { TesseraError, hostTensor } from '@tessera/core'
import { decode } from '../config/codec.js'

/** The reference oracle's file format, "vqp-oracle/1" (see packages/quantizers/test/golden/README.md). */
const TensorJson = t.type({
  shape: t.array(t.number),
  dtype: t.keyof({ float32: null, int64: null, int32: null, bool: null }),
  data: t.array(t.union([t.number, t.boolean])),
})
type TensorJson = t.TypeOf<typeof TensorJson>

const RunJson = t.intersection([
  t.type({
    name: t.string,
    mode: t.keyof({ eval: null, train: null }),
    inputs: t.record(t.string, TensorJson),
    outputs: t.record(t.string, TensorJson),
  }),
  t.partial({
    call: t.string,
    call_kwargs: t.record(t.string, t.unknown),
    state_after: t.record(t.string, TensorJson),
    seed_before_call: t.number,
  }),
])

const CaseJson = t.type({
  format: t.literal('vqp-oracle/1'),
  name: t.string,
  class: t.string,
  constructor: t.intersection([t.type({ class: t.string, kwargs: t.record(t.string, t.unknown) }), t.partial({ args: t.array(t.unknown) })]),
  state: t.record(t.string, TensorJson),
  runs: t.array(RunJson),
})

/** A tensor of a case: the host tensor plus the reference's own dtype (int64 indices load as int32). */
export interface GoldenTensor {
  readonly refDtype: TensorJson['dtype']
  readonly host: HostTensor
}

export interface GoldenRun {
  readonly name: string
  readonly mode: 'eval' | 'train'
  readonly callKwargs: Readonly<Record<string, unknown>>
  readonly inputs: Readonly<Record<string, GoldenTensor>>
  readonly outputs: Readonly<Record<string, GoldenTensor>>
  readonly stateAfter?: Readonly<Record<string, GoldenTensor>>
}

export interface GoldenCase {
  readonly name: string
  readonly className: string
  readonly kwargs: Readonly<Record<string, unknown>>
  /** the constructor's positional arguments (Sequential's modules, each `{ class, kwargs }`); [] when none */
  readonly args: readonly unknown[]
  readonly state: Readonly<Record<string, GoldenTensor>>
  readonly runs: readonly GoldenRun[]
}

function toTensor(j: TensorJson, where: string): E.Either<TesseraError, GoldenTensor> {
  const data = j.data.map((v) => (typeof v === 'boolean' ? (v ? 1 : 0) : v))
  if (j.dtype === 'int64' || j.dtype === 'int32') {
    const bad = data.findIndex((v) => !Number.isInteger(v) || v < -(2 ** 31) || v >= 2 ** 31)
    if (bad >= 0) return E.left(new TesseraError('input', where, `element ${bad} = ${data[bad]} does not fit int32`))
  }
  const dtype = j.dtype === 'float32' ? 'float32' : j.dtype === 'bool' ? 'bool' : 'int32'
  const h = hostTensor(data, j.shape, dtype)
  if (E.isLeft(h)) return E.left(new TesseraError('input', where, h.left.message))
  return E.right({ refDtype: j.dtype, host: h.right })
}

function toTensors(rec: Record<string, TensorJson>, where: string): E.Either<TesseraError, Record<string, GoldenTensor>> {
  const out: Record<string, GoldenTensor> = {}
  for (const [k, v] of Object.entries(rec)) {
    const r = toTensor(v, `${where}.${k}`)
    if (E.isLeft(r)) return r
    out[k] = r.right
  }
  return E.right(out)
}

/** Parse one case file's JSON text. */
export function parseGoldenCase(text: string, where = 'golden'): E.Either<TesseraError, GoldenCase> {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (e) {
    return E.left(new TesseraError('input', where, `not JSON: ${(e as Error).message}`))
  }
  const d = decode(CaseJson, json, where)
  if (E.isLeft(d)) return d
  const c = d.right
  const state = toTensors(c.state, `${where}.state`)
  if (E.isLeft(state)) return state
  const runs: GoldenRun[] = []
  for (const r of c.runs) {
    const inputs = toTensors(r.inputs, `${where}.${r.name}.inputs`)
    if (E.isLeft(inputs)) return inputs
    const outputs = toTensors(r.outputs, `${where}.${r.name}.outputs`)
    if (E.isLeft(outputs)) return outputs
    let stateAfter: Record<string, GoldenTensor> | undefined
    if (r.state_after) {
      const s = toTensors(r.state_after, `${where}.${r.name}.state_after`)
      if (E.isLeft(s)) return s
      stateAfter = s.right
    }
    runs.push({
      name: r.name,
      mode: r.mode,
      callKwargs: r.call_kwargs ?? {},
      inputs: inputs.right,
      outputs: outputs.right,
      ...(stateAfter ? { stateAfter } : {}),
    })
  }
  return E.right({ name: c.name, className: c.class, kwargs: c.constructor.kwargs, args: c.constructor.args ?? [], state: state.right, runs })
}
