/** What every workload shares: its interface, seeded inputs, result checks and ONNX graph helpers. */
import type * as tfc from '@tensorflow/tfjs-core'
import type { Program } from '@tessera/core'
import type { GraphDef, NodeDef, TensorDef } from './onnx/graph.js'
import { DataType } from './onnx/graph.js'

export type Arr = Float32Array | Int32Array | BigInt64Array | Uint8Array
export interface Input {
  readonly shape: number[]
  readonly data: Float32Array
}
export type TF = typeof tfc

export interface CheckResult {
  readonly ok: boolean
  /** Rows whose index differs from the reference only between near-equal candidates. */
  readonly ties: number
  readonly note?: string
}

/**
 * tfjs's form of a workload: tensors derived from the inputs once at setup (a transposed, scaled
 * codebook: the GEMM-friendly operands tfjs's fused matMul wants), then one call's ops.
 */
export interface TfjsPlan {
  /** Kept across calls; disposed with the inputs. */
  readonly kept: readonly tfc.Tensor[]
  /** One call (run inside tf.tidy). */
  call(): tfc.Tensor[]
  /** How the call is written, for the results' configuration notes. */
  readonly form: string
}

/** One workload: its sizes, inputs, and the same computation written for every implementation. */
export interface Workload {
  readonly id: string
  title(quick: boolean): string
  /** Vectors processed per call (for vectors/s). */
  vectors(quick: boolean): number
  /** Floating-point operations per call, where the table reports GFLOP/s. */
  flops?(quick: boolean): number
  inputs(quick: boolean): Input[]
  tessera(quick: boolean): Program
  /** The ONNX model; its `doc` says how the graph is written. */
  onnx(quick: boolean): GraphDef
  tfjs(tf: TF, backend: 'cpu' | 'wasm', ins: tfc.Tensor[], quick: boolean): TfjsPlan
  plain(ins: readonly Input[], quick: boolean): Arr[]
  /** How the plain-JS loop is written. */
  readonly plainForm?: string
  check(ins: readonly Input[], ref: readonly Arr[], got: readonly Arr[], quick: boolean): CheckResult
}

/** mulberry32: a small seeded generator so every process builds the same inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function normalInput(shape: number[], seed: number, scale = 1): Input {
  const r = rng(seed)
  const n = shape.reduce((a, b) => a * b, 1)
  const data = new Float32Array(n)
  for (let i = 0; i < n; i += 2) {
    const u = Math.max(r(), 1e-12), v = r()
    const m = Math.sqrt(-2 * Math.log(u)) * scale
    data[i] = m * Math.cos(2 * Math.PI * v)
    if (i + 1 < n) data[i + 1] = m * Math.sin(2 * Math.PI * v)
  }
  return { shape, data }
}

export const toI32 = (a: Arr): Int32Array => (a instanceof Int32Array ? a : Int32Array.from(a as ArrayLike<number>, Number))

export function floatsClose(a: Arr, b: Arr, atol: number, rtol: number, skip?: (i: number) => boolean): string | undefined {
  if (a.length !== b.length) return `length ${b.length} vs ${a.length}`
  for (let i = 0; i < a.length; i++) {
    if (skip?.(i)) continue
    const x = Number(a[i]), y = Number(b[i])
    if (!(Math.abs(x - y) <= atol + rtol * Math.abs(x)) && !(Number.isNaN(x) && Number.isNaN(y))) return `element ${i}: ${y} vs reference ${x}`
  }
  return undefined
}

export function sqDist(x: Float32Array, xo: number, c: Float32Array, co: number, d: number): number {
  let s = 0
  for (let t = 0; t < d; t++) {
    const u = x[xo + t]! - c[co + t]!
    s += u * u
  }
  return s
}

/** Nearest-code indices: a differing index is a tie when both codes are equally near up to float32 error. */
export function checkNearestIndices(x: Float32Array, cb: Float32Array, d: number, ref: Int32Array, got: Int32Array, rows: (i: number) => boolean = () => true) {
  let ties = 0
  for (let i = 0; i < ref.length; i++) {
    if (!rows(i) || ref[i] === got[i]) continue
    const g = got[i]!
    if (g < 0 || g >= cb.length / d) return { ok: false, ties, note: `row ${i}: index ${g} out of range` }
    const a = sqDist(x, i * d, cb, ref[i]! * d, d), b = sqDist(x, i * d, cb, g * d, d)
    let mag = 0
    for (let t = 0; t < d; t++) mag += x[i * d + t]! ** 2
    if (Math.abs(a - b) > 1e-5 * (mag + a + b) + 1e-6)
      return { ok: false, ties, note: `row ${i}: index ${g} (distance ${b}) vs reference ${ref[i]} (distance ${a})` }
    ties++
  }
  return { ok: true, ties }
}

// ---- ONNX graph helpers ----
export const i64 = (name: string, vals: number[]): TensorDef => ({ name, dims: [vals.length], type: DataType.INT64, data: BigInt64Array.from(vals.map(BigInt)) })
export const f32c = (name: string, vals: number[], dims = [vals.length]): TensorDef => ({ name, dims, type: DataType.FLOAT, data: Float32Array.from(vals) })
export const i32c = (name: string, vals: number[], dims = [vals.length]): TensorDef => ({ name, dims, type: DataType.INT32, data: Int32Array.from(vals) })
export const node = (op: string, inputs: string[], outputs: string[], attrs?: NodeDef['attrs']): NodeDef => ({ op, inputs, outputs, ...(attrs ? { attrs } : {}) })
export const ints = (value: number[]) => ({ kind: 'ints' as const, value })
export const int = (value: number) => ({ kind: 'int' as const, value })
export const flt = (value: number) => ({ kind: 'float' as const, value })
