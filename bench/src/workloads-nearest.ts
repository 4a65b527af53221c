/** The nearest-code workloads (W1, W1b) and residual VQ (RVQ), with their peers' formulations. */
import type * as tfc from '@tensorflow/tfjs-core'
import type { NodeDef } from './onnx/graph.js'
import { DataType } from './onnx/graph.js'
import { nearestProgram, residualProgram } from './programs.js'
import type { TF, Workload } from './workload-kit.js'
import { normalInput, toI32, checkNearestIndices, node, ints, int, flt } from './workload-kit.js'

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

export function nearestWorkload(id: string, full: [number, number, number], quick: [number, number, number]): Workload {
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

const RVQ_LAYERS = 8
export function residualWorkload(): Workload {
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

