/** The scalar quantizer workloads: FSQ forward (W2), LFQ forward (W3a) and LFQ entropy terms (W3b). */
import type * as tfc from '@tensorflow/tfjs-core'
import { DataType } from './onnx/graph.js'
import { fsqConsts, fsqProgram, lfqEntropyProgram, lfqProgram } from './programs.js'
import type { Workload } from './workload-kit.js'
import { normalInput, toI32, floatsClose, i64, f32c, i32c, node, ints, int, flt } from './workload-kit.js'

const FSQ_LEVELS = [8, 8, 8, 5, 5]

export const fsqWorkload: Workload = {
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
export const lfqWorkload: Workload = {
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
export const lfqEntropyWorkload: Workload = {
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

