import type { Program, Tensor } from '@tessera/core'
import { traceOrThrow } from '@tessera/core'

/**
 * The workloads as Tessera programs, traced with the core Tensor API. FSQ and LFQ are traced
 * here from their formulas (vector-quantize-pytorch's FSQ.bound/quantize/codes_to_indices and
 * LFQ's sign quantization and entropy terms) because packages/quantizers had no FSQ/LFQ yet.
 */

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

/** Squared euclidean distance to every code, argmin, and the chosen code vectors. */
export function nearestProgram(n: number, d: number, k: number): Program {
  return traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => {
    const xx = x.square().sum(-1, true)
    const cc = cb.square().sum(-1)
    const dist = xx.sub(x.matmul(cb.mT).mul(2)).add(cc)
    const idx = dist.argmin(-1)
    return [idx, cb.gather(idx, 0)]
  }).program
}

/** FSQ forward: bound with tanh, round half-to-even, scale to [-1, 1]; indices with dimension 0 least significant. */
/** FSQ's per-dimension constants, shared by the Tessera program and the peers' versions. */
export function fsqConsts(levels: readonly number[]) {
  const eps = 1e-3
  const halfL = levels.map((l) => ((l - 1) * (1 + eps)) / 2)
  const offset = levels.map((l) => (l % 2 === 0 ? 0.5 : 0))
  const shift = levels.map((_, i) => Math.atanh(offset[i]! / halfL[i]!))
  const halfWidth = levels.map((l) => Math.floor(l / 2))
  const basis: number[] = []
  levels.reduce((acc, l) => (basis.push(acc), acc * l), 1)
  return { halfL, offset, shift, halfWidth, basis }
}

export function fsqProgram(n: number, levels: readonly number[]): Program {
  const d = levels.length
  const { halfL, offset, shift, halfWidth, basis } = fsqConsts(levels)
  return traceOrThrow([f32([n, d])], (z: Tensor) => {
    const b = z.builder
    const c = (xs: number[]) => b.constant(xs, [d])
    const bounded = z.add(c(shift)).tanh().mul(c(halfL)).sub(c(offset))
    const codes = bounded.round().div(c(halfWidth))
    const zhat = codes.mul(c(halfWidth)).add(c(halfWidth))
    const idx = zhat.mul(c(basis)).sum(-1).round().cast('int32')
    return [codes, idx]
  }).program
}

/** LFQ forward: sign quantization (0 goes to -1) and indices with dimension 0 most significant. */
export function lfqProgram(n: number, dim: number): Program {
  return traceOrThrow([f32([n, dim])], (x: Tensor) => {
    const b = x.builder
    const pos = x.gt(0)
    const q = where(pos, 1, -1)
    const bits = b.constant(Array.from({ length: dim }, (_, i) => 2 ** (dim - 1 - i)), [dim], 'int32')
    const idx = pos.cast('int32').mul(bits).sum(-1)
    return [q, idx]
  }).program

  function where(c: Tensor, a: number, bb: number): Tensor {
    return c.cast('float32').mul(a - bb).add(bb)
  }
}

/** LFQ entropy terms: softmax over codes of -distance * inv_temperature; per-sample and codebook entropy. */
export function lfqEntropyProgram(n: number, dim: number, invTemperature = 100): Program {
  const k = 2 ** dim
  return traceOrThrow([f32([n, dim]), f32([k, dim])], (x: Tensor, cb: Tensor) => {
    const dist = x.matmul(cb.mT).mul(-2)
    const prob = dist.mul(-invTemperature).softmax(-1)
    const entropy = (p: Tensor, axis: number | undefined) => p.mul(p.maximum(1e-5).log()).sum(axis).neg()
    const perSample = entropy(prob, -1).mean()
    const avg = prob.mean(0)
    const cbEntropy = entropy(avg, undefined)
    return [perSample, cbEntropy]
  }).program
}

/** Residual VQ: each layer quantizes the residual left by the previous ones (nearest code, squared euclidean). */
export function residualProgram(n: number, d: number, k: number, layers: number): Program {
  const specs = [f32([n, d]), ...Array.from({ length: layers }, () => f32([k, d]))]
  return traceOrThrow(specs, (x: Tensor, ...cbs: Tensor[]) => {
    let residual = x
    let quantized: Tensor | undefined
    const indices: Tensor[] = []
    for (const cb of cbs) {
      const dist = residual.square().sum(-1, true).sub(residual.matmul(cb.mT).mul(2)).add(cb.square().sum(-1))
      const idx = dist.argmin(-1)
      const q = cb.gather(idx, 0)
      indices.push(idx)
      quantized = quantized ? quantized.add(q) : q
      residual = residual.sub(q)
    }
    return [quantized!, ...indices]
  }).program
}

/** The smallest useful program: its run time is the per-call overhead of a warm executable. */
export function overheadProgram(): Program {
  return traceOrThrow([f32([4])], (x: Tensor) => [x.add(1)]).program
}
