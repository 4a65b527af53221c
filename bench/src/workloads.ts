import type * as tfc from '@tensorflow/tfjs-core'
import type { Program } from '@tessera/core'
import type { GraphDef, NodeDef, TensorDef } from './onnx/graph.js'
import { DataType } from './onnx/graph.js'
import { fsqConsts, fsqProgram, lfqEntropyProgram, lfqProgram, nearestProgram, residualProgram } from './programs.js'

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

function normalInput(shape: number[], seed: number, scale = 1): Input {
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

const toI32 = (a: Arr): Int32Array => (a instanceof Int32Array ? a : Int32Array.from(a as ArrayLike<number>, Number))

function floatsClose(a: Arr, b: Arr, atol: number, rtol: number, skip?: (i: number) => boolean): string | undefined {
  if (a.length !== b.length) return `length ${b.length} vs ${a.length}`
  for (let i = 0; i < a.length; i++) {
    if (skip?.(i)) continue
    const x = Number(a[i]), y = Number(b[i])
    if (!(Math.abs(x - y) <= atol + rtol * Math.abs(x)) && !(Number.isNaN(x) && Number.isNaN(y))) return `element ${i}: ${y} vs reference ${x}`
  }
  return undefined
}

function sqDist(x: Float32Array, xo: number, c: Float32Array, co: number, d: number): number {
  let s = 0
  for (let t = 0; t < d; t++) {
    const u = x[xo + t]! - c[co + t]!
    s += u * u
  }
  return s
}

/** Nearest-code indices: a differing index is a tie when both codes are equally near up to float32 error. */
function checkNearestIndices(x: Float32Array, cb: Float32Array, d: number, ref: Int32Array, got: Int32Array, rows: (i: number) => boolean = () => true) {
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
const i64 = (name: string, vals: number[]): TensorDef => ({ name, dims: [vals.length], type: DataType.INT64, data: BigInt64Array.from(vals.map(BigInt)) })
const f32c = (name: string, vals: number[], dims = [vals.length]): TensorDef => ({ name, dims, type: DataType.FLOAT, data: Float32Array.from(vals) })
const i32c = (name: string, vals: number[], dims = [vals.length]): TensorDef => ({ name, dims, type: DataType.INT32, data: Int32Array.from(vals) })
const node = (op: string, inputs: string[], outputs: string[], attrs?: NodeDef['attrs']): NodeDef => ({ op, inputs, outputs, ...(attrs ? { attrs } : {}) })
const ints = (value: number[]) => ({ kind: 'ints' as const, value })
const int = (value: number) => ({ kind: 'int' as const, value })
const flt = (value: number) => ({ kind: 'float' as const, value })

/**
 * ||c||² - 2 x·c (the distance less ||x||², which does not change the argmin) as one Gemm
 * (transB, alpha -2, ||c||² as the bias), then ArgMin and Gather.
 */
function onnxNearest(prefix: string, x: string, cb: string, nodes: NodeDef[]): { idx: string; q: string } {
  const p = (s: string) => `${prefix}${s}`
  nodes.push(
    node('ReduceSumSquare', [cb], [p('cc')], { axes: ints([1]), keepdims: int(0) }),
    node('Gemm', [x, cb, p('cc')], [p('dist')], { alpha: flt(-2), beta: flt(1), transB: int(1) }),
    node('ArgMin', [p('dist')], [p('idx')], { axis: int(1), keepdims: int(0), select_last_index: int(0) }),
    node('Gather', [cb, p('idx')], [p('q')], { axis: int(0) }),
  )
  return { idx: p('idx'), q: p('q') }
}

const NEAREST_ONNX_DOC = 'ReduceSumSquare(cb) -> Gemm(x, cb, ||c||²; alpha -2, transB) -> ArgMin -> Gather (no ||x||² term)'

/** The codebook as tfjs's fused matMul wants it, made once at setup: (D, K) scaled by -2, and ||c||² for the bias. */
function tfjsCodebook(tf: TF, cb: tfc.Tensor): { cbT: tfc.Tensor; cc: tfc.Tensor } {
  return tf.tidy(() => ({ cbT: tf.mul(tf.transpose(cb), -2), cc: tf.sum(tf.square(cb), 1) }))
}

/**
 * One fused matMul (x · cbT with ||c||² as the bias: the distance less ||x||²), then argMin. With
 * the codebook pre-transposed the wasm backend runs it on XNNPACK (W1 on this machine: ~1000 ms
 * with matMul(x, cb, transposeB) and separate ops, ~160 ms this way).
 */
function tfjsNearest(tf: TF, x: tfc.Tensor, cbT: tfc.Tensor, cc: tfc.Tensor): tfc.Tensor {
  return tf.argMin(tf.fused.matMul({ a: x, b: cbT, bias: cc }), 1)
}

const TFJS_NEAREST_FORM = 'codebook prepared once at setup (transposed, scaled by -2, and ||c||²; not timed per call); per call tf.fused.matMul(x, cbT, bias ||c||²) -> argMin -> gather'

function nearestWorkload(id: string, full: [number, number, number], quick: [number, number, number]): Workload {
  const dims = (q: boolean) => (q ? quick : full)
  return {
    id,
    title: (q) => `nearest code N=${dims(q)[0]} D=${dims(q)[1]} K=${dims(q)[2]}`,
    vectors: (q) => dims(q)[0],
    flops: (q) => {
      const [n, d, k] = dims(q)
      return 2 * n * k * d
    },
    inputs: (q) => {
      const [n, d, k] = dims(q)
      return [normalInput([n, d], 11), normalInput([k, d], 12)]
    },
    tessera: (q) => nearestProgram(...dims(q)),
    onnx: (q) => {
      const [n, d, k] = dims(q)
      const nodes: NodeDef[] = []
      const { idx, q: qq } = onnxNearest('', 'x', 'cb', nodes)
      return {
        name: id, nodes, initializers: [], doc: NEAREST_ONNX_DOC,
        inputs: [{ name: 'x', type: DataType.FLOAT, dims: [n, d] }, { name: 'cb', type: DataType.FLOAT, dims: [k, d] }],
        outputs: [{ name: idx, type: DataType.INT64, dims: [n] }, { name: qq, type: DataType.FLOAT, dims: [n, d] }],
      }
    },
    tfjs: (tf, _b, [x, cb]) => {
      const { cbT, cc } = tfjsCodebook(tf, cb!)
      return {
        kept: [cbT, cc],
        call: () => {
          const idx = tfjsNearest(tf, x!, cbT, cc)
          return [idx, tf.gather(cb!, idx)]
        },
        form: TFJS_NEAREST_FORM,
      }
    },
    plainForm: 'loops over rows and codes, float64 dot products, ||c||² once per call, no ||x||² term',
    plain: ([x, cb], q) => {
      const [n, d, k] = dims(q)
      const xd = x!.data, cd = cb!.data
      const cc = new Float64Array(k)
      for (let j = 0; j < k; j++) for (let t = 0; t < d; t++) cc[j] += cd[j * d + t]! ** 2
      const idx = new Int32Array(n)
      const out = new Float32Array(n * d)
      for (let i = 0; i < n; i++) {
        let best = Infinity, bi = 0
        for (let j = 0; j < k; j++) {
          let dot = 0
          for (let t = 0; t < d; t++) dot += xd[i * d + t]! * cd[j * d + t]!
          const v = cc[j]! - 2 * dot
          if (v < best) { best = v; bi = j }
        }
        idx[i] = bi
        out.set(cd.subarray(bi * d, bi * d + d), i * d)
      }
      return [idx, out]
    },
    check: ([x, cb], ref, got, q) => {
      const d = dims(q)[1]
      const r = checkNearestIndices(x!.data, cb!.data, d, toI32(ref[0]!), toI32(got[0]!))
      if (!r.ok) return r
      const gi = toI32(got[0]!)
      // quantized rows must be the codebook rows of the implementation's own indices
      for (let i = 0; i < gi.length; i++)
        for (let t = 0; t < d; t++)
          if (Number(got[1]![i * d + t]) !== cb!.data[gi[i]! * d + t]) return { ok: false, ties: r.ties, note: `quantized row ${i} is not code ${gi[i]}` }
      return r
    },
  }
}

const FSQ_LEVELS = [8, 8, 8, 5, 5]

const fsqWorkload: Workload = {
  id: 'W2',
  title: (q) => `FSQ forward N=${q ? 8192 : 65536} levels [${FSQ_LEVELS}]`,
  vectors: (q) => (q ? 8192 : 65536),
  inputs: (q) => [normalInput([q ? 8192 : 65536, FSQ_LEVELS.length], 21, 1.5)],
  tessera: (q) => fsqProgram(q ? 8192 : 65536, FSQ_LEVELS),
  onnx: (q) => {
    const n = q ? 8192 : 65536, d = FSQ_LEVELS.length
    const c = fsqConsts(FSQ_LEVELS)
    return {
      name: 'fsq',
      doc: 'Add, Tanh, Mul, Sub, Round, Div, then Mul, Add, Mul, ReduceSum, Round, Cast for the indices',
      nodes: [
        node('Add', ['z', 'shift'], ['a']), node('Tanh', ['a'], ['t']), node('Mul', ['t', 'halfL'], ['m']),
        node('Sub', ['m', 'offset'], ['bounded']), node('Round', ['bounded'], ['r']), node('Div', ['r', 'hw'], ['codes']),
        node('Mul', ['codes', 'hw'], ['s']), node('Add', ['s', 'hw'], ['zhat']), node('Mul', ['zhat', 'basis'], ['w']),
        node('ReduceSum', ['w', 'axes'], ['sum'], { keepdims: int(0) }), node('Round', ['sum'], ['rs']),
        node('Cast', ['rs'], ['idx'], { to: int(DataType.INT32) }),
      ],
      initializers: [
        f32c('shift', c.shift), f32c('halfL', c.halfL), f32c('offset', c.offset), f32c('hw', c.halfWidth), f32c('basis', c.basis), i64('axes', [1]),
      ],
      inputs: [{ name: 'z', type: DataType.FLOAT, dims: [n, d] }],
      outputs: [{ name: 'codes', type: DataType.FLOAT, dims: [n, d] }, { name: 'idx', type: DataType.INT32, dims: [n] }],
    }
  },
  tfjs: (tf, _b, [z]) => {
    const c = fsqConsts(FSQ_LEVELS)
    const [shift, halfL, offset, hw, basis] = [c.shift, c.halfL, c.offset, c.halfWidth, c.basis].map((v) => tf.tensor1d(v)) as [tfc.Tensor, tfc.Tensor, tfc.Tensor, tfc.Tensor, tfc.Tensor]
    return {
      kept: [shift, halfL, offset, hw, basis],
      call: () => {
        const bounded = tf.sub(tf.mul(tf.tanh(tf.add(z!, shift)), halfL), offset)
        const codes = tf.div(tf.round(bounded), hw)
        const zhat = tf.add(tf.mul(codes, hw), hw)
        const idx = tf.cast(tf.round(tf.sum(tf.mul(zhat, basis), 1)), 'int32')
        return [codes, idx]
      },
      form: 'per-dimension constants made once at setup; per call add, tanh, mul, sub, round, div, then the index sum (elementwise ops, one kernel each)',
    }
  },
  plainForm: 'one loop over rows, Math.tanh, round half to even',
  plain: ([z]) => {
    const c = fsqConsts(FSQ_LEVELS)
    const d = FSQ_LEVELS.length
    const n = z!.shape[0]!
    const codes = new Float32Array(n * d), idx = new Int32Array(n)
    const zd = z!.data
    for (let i = 0; i < n; i++) {
      let s = 0
      for (let j = 0; j < d; j++) {
        const b = Math.fround(Math.fround(Math.tanh(zd[i * d + j]! + c.shift[j]!)) * Math.fround(c.halfL[j]!)) - Math.fround(c.offset[j]!)
        let r = Math.round(b)
        if (r - b === 0.5 && r % 2 !== 0) r -= 1
        codes[i * d + j] = r / c.halfWidth[j]!
        s += (r + c.halfWidth[j]!) * c.basis[j]!
      }
      idx[i] = s
    }
    return [codes, idx]
  },
  check: ([z], ref, got) => {
    // a row is a tie when some bounded value sits within float32 error of a rounding midpoint
    const c = fsqConsts(FSQ_LEVELS)
    const d = FSQ_LEVELS.length
    const tie = (i: number) => {
      for (let j = 0; j < d; j++) {
        const b = Math.tanh(z!.data[i * d + j]! + c.shift[j]!) * c.halfL[j]! - c.offset[j]!
        if (Math.abs(Math.abs(b - Math.floor(b)) - 0.5) < 1e-5) return true
      }
      return false
    }
    const ri = toI32(ref[1]!), gi = toI32(got[1]!)
    let ties = 0
    for (let i = 0; i < ri.length; i++)
      if (ri[i] !== gi[i]) {
        if (!tie(i)) return { ok: false, ties, note: `row ${i}: index ${gi[i]} vs reference ${ri[i]}` }
        ties++
      }
    const bad = floatsClose(ref[0]!, got[0]!, 1e-6, 0, (k) => ri[Math.floor(k / d)] !== gi[Math.floor(k / d)])
    return bad ? { ok: false, ties, note: `codes ${bad}` } : { ok: true, ties }
  },
}

const LFQ_DIM = 16
const lfqWorkload: Workload = {
  id: 'W3a',
  title: (q) => `LFQ forward N=${q ? 8192 : 65536} dim ${LFQ_DIM}`,
  vectors: (q) => (q ? 8192 : 65536),
  inputs: (q) => [normalInput([q ? 8192 : 65536, LFQ_DIM], 31)],
  tessera: (q) => lfqProgram(q ? 8192 : 65536, LFQ_DIM),
  onnx: (q) => {
    const n = q ? 8192 : 65536
    return {
      name: 'lfq',
      doc: 'Greater, Where for the codes; Cast, Mul, ReduceSum for the indices',
      nodes: [
        node('Greater', ['x', 'zero'], ['pos']), node('Where', ['pos', 'one', 'minus'], ['q']),
        node('Cast', ['pos'], ['bits'], { to: int(DataType.INT32) }), node('Mul', ['bits', 'weights'], ['w']),
        node('ReduceSum', ['w', 'axes'], ['idx'], { keepdims: int(0) }),
      ],
      initializers: [
        f32c('zero', [0], []), f32c('one', [1], []), f32c('minus', [-1], []), i64('axes', [1]),
        i32c('weights', Array.from({ length: LFQ_DIM }, (_, i) => 2 ** (LFQ_DIM - 1 - i))),
      ],
      inputs: [{ name: 'x', type: DataType.FLOAT, dims: [n, LFQ_DIM] }],
      outputs: [{ name: 'q', type: DataType.FLOAT, dims: [n, LFQ_DIM] }, { name: 'idx', type: DataType.INT32, dims: [n] }],
    }
  },
  tfjs: (tf, _b, [x]) => {
    const w = tf.tensor1d(Array.from({ length: LFQ_DIM }, (_, i) => 2 ** (LFQ_DIM - 1 - i)), 'int32')
    const [one, minus] = [tf.onesLike(x!), tf.fill(x!.shape, -1)]
    return {
      kept: [w, one, minus],
      call: () => {
        const pos = tf.greater(x!, 0)
        return [tf.where(pos, one, minus), tf.sum(tf.mul(tf.cast(pos, 'int32'), w), 1)]
      },
      form: 'bit weights and the ±1 fill tensors made once at setup; per call greater, where, cast, mul, sum',
    }
  },
  plainForm: 'one loop over rows and bits',
  plain: ([x]) => {
    const n = x!.shape[0]!
    const q = new Float32Array(n * LFQ_DIM), idx = new Int32Array(n)
    for (let i = 0; i < n; i++) {
      let s = 0
      for (let j = 0; j < LFQ_DIM; j++) {
        const p = x!.data[i * LFQ_DIM + j]! > 0
        q[i * LFQ_DIM + j] = p ? 1 : -1
        s = s * 2 + (p ? 1 : 0)
      }
      idx[i] = s
    }
    return [q, idx]
  },
  check: (_ins, ref, got) => {
    const ri = toI32(ref[1]!), gi = toI32(got[1]!)
    for (let i = 0; i < ri.length; i++) if (ri[i] !== gi[i]) return { ok: false, ties: 0, note: `row ${i}: index ${gi[i]} vs reference ${ri[i]}` }
    const bad = floatsClose(ref[0]!, got[0]!, 0, 0)
    return bad ? { ok: false, ties: 0, note: `quantized ${bad}` } : { ok: true, ties: 0 }
  },
}

const ENT_DIM = 10
const INV_T = 100
const lfqEntropyWorkload: Workload = {
  id: 'W3b',
  title: (q) => `LFQ entropy terms dim ${ENT_DIM} (1024 codes) N=${q ? 2048 : 65536}`,
  vectors: (q) => (q ? 2048 : 65536),
  flops: (q) => 2 * (q ? 2048 : 65536) * 1024 * ENT_DIM,
  inputs: (q) => {
    const k = 2 ** ENT_DIM
    const cb = new Float32Array(k * ENT_DIM)
    for (let j = 0; j < k; j++) for (let t = 0; t < ENT_DIM; t++) cb[j * ENT_DIM + t] = (j >> (ENT_DIM - 1 - t)) & 1 ? 1 : -1
    return [normalInput([q ? 2048 : 65536, ENT_DIM], 41, 0.1), { shape: [k, ENT_DIM], data: cb }]
  },
  tessera: (q) => lfqEntropyProgram(q ? 2048 : 65536, ENT_DIM, INV_T),
  onnx: (q) => {
    const n = q ? 2048 : 65536, k = 2 ** ENT_DIM
    return {
      name: 'lfq_entropy',
      // LogSoftmax then Exp for p, with log(max(p, eps)) as max(log p, log eps): 0.87x the time of
      // Softmax, Max, Log (interleaved A/B, 12 rounds, N=65536, 07:48 UTC)
      doc: 'Gemm(x, cb; alpha 2/T, transB) -> LogSoftmax; p = Exp; per-sample entropy from Max(log p, log eps), Mul, ReduceSum, ReduceMean; codebook entropy from ReduceMean(p), Max(eps), Log, Mul, ReduceSum',
      nodes: [
        node('Gemm', ['x', 'cb'], ['logits'], { alpha: flt(2 * INV_T), transB: int(1) }),
        node('LogSoftmax', ['logits'], ['logp'], { axis: int(-1) }), node('Exp', ['logp'], ['prob']),
        node('Max', ['logp', 'logEps'], ['lp']), node('Mul', ['prob', 'lp'], ['plp']),
        node('ReduceSum', ['plp', 'ax1'], ['negH'], { keepdims: int(0) }),
        node('ReduceMean', ['negH'], ['negHm'], { axes: ints([0]), keepdims: int(0) }), node('Neg', ['negHm'], ['perSample']),
        node('ReduceMean', ['prob'], ['avg'], { axes: ints([0]), keepdims: int(0) }),
        node('Max', ['avg', 'eps'], ['ac']), node('Log', ['ac'], ['la']), node('Mul', ['avg', 'la'], ['ala']),
        node('ReduceSum', ['ala', 'ax0'], ['negCb'], { keepdims: int(0) }), node('Neg', ['negCb'], ['cbEntropy']),
      ],
      initializers: [f32c('eps', [1e-5], []), f32c('logEps', [Math.log(1e-5)], []), i64('ax1', [1]), i64('ax0', [0])],
      inputs: [{ name: 'x', type: DataType.FLOAT, dims: [n, ENT_DIM] }, { name: 'cb', type: DataType.FLOAT, dims: [k, ENT_DIM] }],
      outputs: [{ name: 'perSample', type: DataType.FLOAT, dims: [] }, { name: 'cbEntropy', type: DataType.FLOAT, dims: [] }],
    }
  },
  tfjs: (tf, backend, [x, cb]) => {
    // the codebook transposed and scaled by 2/T once at setup: one plain matMul per call
    const cbS = tf.tidy(() => tf.mul(tf.transpose(cb!), 2 * INV_T))
    const ent = (p: tfc.Tensor, axis?: number) => tf.neg(tf.sum(tf.mul(p, tf.log(tf.maximum(p, 1e-5))), axis))
    // wasm has a native Softmax kernel; its logSoftmax is a chain of ops (max, sub, exp, sum, log,
    // sub), 3x slower here (5.3 s vs 1.7 s). On the cpu backend both are op chains and logSoftmax
    // saves the log pass (34 s vs 40 s, busy machine).
    if (backend === 'wasm')
      return {
        kept: [cbS],
        call: () => {
          const prob = tf.softmax(tf.matMul(x!, cbS), -1)
          return [tf.mean(ent(prob, 1)), ent(tf.mean(prob, 0))]
        },
        form: 'codebook transposed and scaled by 2/T once at setup; per call matMul -> softmax (native kernel) -> p·log(max(p, 1e-5)) sums (logSoftmax measured 3x slower on wasm)',
      }
    const logEps = Math.fround(Math.log(1e-5))
    return {
      kept: [cbS],
      call: () => {
        const logp = tf.logSoftmax(tf.matMul(x!, cbS), -1)
        const prob = tf.exp(logp)
        // log(max(p, eps)) = max(log p, log eps)
        const perSample = tf.neg(tf.mean(tf.sum(tf.mul(prob, tf.maximum(logp, logEps)), 1)))
        return [perSample, ent(tf.mean(prob, 0))]
      },
      form: 'codebook transposed and scaled by 2/T once at setup; per call matMul -> logSoftmax, p = exp(log p), per-sample entropy from max(log p, log 1e-5)',
    }
  },
  plainForm: 'one loop per row over the 1024 codes in float64 (dot, max, exp, entropy), column sums in float64',
  plain: ([x, cb]) => {
    const n = x!.shape[0]!, k = cb!.shape[0]!, d = ENT_DIM
    const avg = new Float64Array(k), row = new Float64Array(k)
    let per = 0
    for (let i = 0; i < n; i++) {
      let mx = -Infinity
      for (let j = 0; j < k; j++) {
        let dot = 0
        for (let t = 0; t < d; t++) dot += x!.data[i * d + t]! * cb!.data[j * d + t]!
        row[j] = 2 * INV_T * dot
        if (row[j]! > mx) mx = row[j]!
      }
      let s = 0
      for (let j = 0; j < k; j++) s += row[j] = Math.exp(row[j]! - mx)
      let h = 0
      for (let j = 0; j < k; j++) {
        const p = row[j]! / s
        avg[j] += p
        h -= p * Math.log(Math.max(p, 1e-5))
      }
      per += h
    }
    let hc = 0
    for (let j = 0; j < k; j++) {
      const p = avg[j]! / n
      hc -= p * Math.log(Math.max(p, 1e-5))
    }
    return [Float32Array.of(per / n), Float32Array.of(hc)]
  },
  check: (_ins, ref, got) => {
    const bad = floatsClose(ref[0]!, got[0]!, 1e-4, 1e-3) ?? floatsClose(ref[1]!, got[1]!, 1e-4, 1e-3)
    return bad ? { ok: false, ties: 0, note: bad } : { ok: true, ties: 0 }
  },
}

const RVQ_LAYERS = 8
function residualWorkload(): Workload {
  const dims = (q: boolean): [number, number, number] => (q ? [512, 32, 128] : [16384, 64, 1024])
  return {
    id: 'RVQ',
    title: (q) => `residual VQ ${RVQ_LAYERS} layers N=${dims(q)[0]} D=${dims(q)[1]} K=${dims(q)[2]}`,
    vectors: (q) => dims(q)[0],
    flops: (q) => {
      const [n, d, k] = dims(q)
      return RVQ_LAYERS * 2 * n * k * d
    },
    inputs: (q) => {
      const [n, d, k] = dims(q)
      return [normalInput([n, d], 51), ...Array.from({ length: RVQ_LAYERS }, (_, l) => normalInput([k, d], 52 + l, 1 / (l + 1)))]
    },
    tessera: (q) => residualProgram(...dims(q), RVQ_LAYERS),
    onnx: (q) => {
      const [n, d, k] = dims(q)
      const nodes: NodeDef[] = []
      let residual = 'x'
      let quant = ''
      const idxs: string[] = []
      for (let l = 0; l < RVQ_LAYERS; l++) {
        const { idx, q: qq } = onnxNearest(`l${l}_`, residual, `cb${l}`, nodes)
        idxs.push(idx)
        if (quant) {
          nodes.push(node('Add', [quant, qq], [`sum${l}`]))
          quant = `sum${l}`
        } else quant = qq
        nodes.push(node('Sub', [residual, qq], [`res${l}`]))
        residual = `res${l}`
      }
      return {
        name: 'rvq', nodes, initializers: [], doc: `per layer: ${NEAREST_ONNX_DOC}, then Sub for the residual and Add for the sum`,
        inputs: [{ name: 'x', type: DataType.FLOAT, dims: [n, d] }, ...Array.from({ length: RVQ_LAYERS }, (_, l) => ({ name: `cb${l}`, type: DataType.FLOAT, dims: [k, d] }))],
        outputs: [{ name: quant, type: DataType.FLOAT, dims: [n, d] }, ...idxs.map((name) => ({ name, type: DataType.INT64, dims: [n] }))],
      }
    },
    tfjs: (tf, _b, [x, ...cbs]) => {
      const prepared = cbs.map((cb) => tfjsCodebook(tf, cb))
      return {
        kept: prepared.flatMap((p) => [p.cbT, p.cc]),
        call: () => {
          let residual = x!
          let quant: tfc.Tensor | undefined
          const idxs: tfc.Tensor[] = []
          cbs.forEach((cb, l) => {
            const idx = tfjsNearest(tf, residual, prepared[l]!.cbT, prepared[l]!.cc)
            const q = tf.gather(cb, idx)
            idxs.push(idx)
            quant = quant ? tf.add(quant, q) : q
            residual = tf.sub(residual, q)
          })
          return [quant!, ...idxs]
        },
        form: `per layer as W1: ${TFJS_NEAREST_FORM}; then sub and add`,
      }
    },
    plainForm: 'per layer as W1, residual and sum updated in place',
    plain: ([x, ...cbs], q) => {
      const [n, d, k] = dims(q)
      const residual = Float32Array.from(x!.data)
      const quant = new Float32Array(n * d)
      const idxs = cbs.map(() => new Int32Array(n))
      cbs.forEach((cb, l) => {
        const cd = cb.data
        const cc = new Float64Array(k)
        for (let j = 0; j < k; j++) for (let t = 0; t < d; t++) cc[j] += cd[j * d + t]! ** 2
        for (let i = 0; i < n; i++) {
          let best = Infinity, bi = 0
          for (let j = 0; j < k; j++) {
            let dot = 0
            for (let t = 0; t < d; t++) dot += residual[i * d + t]! * cd[j * d + t]!
            const v = cc[j]! - 2 * dot
            if (v < best) { best = v; bi = j }
          }
          idxs[l]![i] = bi
          for (let t = 0; t < d; t++) {
            quant[i * d + t] += cd[bi * d + t]!
            residual[i * d + t] -= cd[bi * d + t]!
          }
        }
      })
      return [quant, ...idxs]
    },
    check: ([x, ...cbs], ref, got, q) => {
      // a tie at one layer changes every later residual: check rows up to their first tie
      const [n, d] = dims(q)
      const done = new Uint8Array(n)
      const residual = Float32Array.from(x!.data)
      let ties = 0
      for (let l = 0; l < RVQ_LAYERS; l++) {
        const r = checkNearestIndices(residual, cbs[l]!.data, d, toI32(ref[1 + l]!), toI32(got[1 + l]!), (i) => done[i] === 0)
        if (!r.ok) return { ...r, note: `layer ${l}: ${r.note}` }
        ties += r.ties
        const ri = toI32(ref[1 + l]!), gi = toI32(got[1 + l]!)
        for (let i = 0; i < n; i++) {
          if (ri[i] !== gi[i]) done[i] = 1
          for (let t = 0; t < d; t++) residual[i * d + t] = Math.fround(residual[i * d + t]! - cbs[l]!.data[ri[i]! * d + t]!)
        }
      }
      return { ok: true, ties }
    },
  }
}

export const workloads: readonly Workload[] = [
  nearestWorkload('W1', [16384, 64, 1024], [1024, 64, 256]),
  nearestWorkload('W1b', [16384, 256, 4096], [512, 256, 512]),
  fsqWorkload,
  lfqWorkload,
  lfqEntropyWorkload,
  residualWorkload(),
]
