import { describe, expect, it } from 'vitest'
import type { Kernel, Plan, Tensor } from '@tessera/core'
import { planKernels, random, traceOrThrow } from '@tessera/core'
import { gpuJsBackend } from '@tessera/backend-gpujs'
import { cpuBackend } from '@tessera/backend-cpu'
import type { Quantizer } from '../src/quantizer.js'
import { fsq } from '../src/fsq/fsq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { applyQ, orThrow, randn } from './helpers.js'

/**
 * gpu.js runs core's lowering, so the patterns core recognizes reach it too: nearest-code search
 * is one kernel whose argmin loop holds the dot product as a nested loop (the distance matrix is
 * never a texture), and FSQ's forward fuses into a fixed, small number of kernels. Planning needs
 * no GPU, so these counts are checked on every machine.
 */

const evalProgram = (q: Quantizer, shape: readonly number[]) =>
  traceOrThrow([q.paramSpecs, q.stateSpecs, { shape, dtype: 'float32' as const }], (p, s, x) => {
    const r = q.apply(p as never, s as never, x as Tensor, { training: false })
    return [r.quantized, r.indices]
  }).program

const nested = (k: Kernel) => k.nodes.some((n) => n.k === 'reduce' && (n.level ?? 0) === 1)
const plan = (q: Quantizer, shape: readonly number[]): Plan => gpuJsBackend('cpu').plan(evalProgram(q, shape))

describe('gpu.js lowering uses core patterns', () => {
  const vq = orThrow(vectorQuantize({ dim: 8, codebook_size: 32 }))

  it('VQ eval: the nearest-code search is one kernel with a nested dot product; no distance buffer', () => {
    const p = plan(vq, [2, 5, 8])
    const kernels = planKernels(p)
    expect(kernels.filter(nested)).toHaveLength(1)
    // |x|^2, |c|^2, distances + argmax, the codebook and the indices reshaped for the gather, the gather, the indices' output shape
    expect(kernels).toHaveLength(7)
    // 10 vectors x 32 codes of distances are never stored
    expect(p.buffers.filter((b) => b.size === 10 * 32)).toEqual([])
  })

  it('VQ eval at a tokenizer batch (16384 vectors, 1024 codes: 2^24 distances) plans without refusal', () => {
    const big = orThrow(vectorQuantize({ dim: 8, codebook_size: 1024 }))
    const p = plan(big, [1, 16384, 8])
    expect(Math.max(...p.buffers.map((b) => b.size))).toBeLessThan(2 ** 24)
    expect(planKernels(p).filter(nested)).toHaveLength(1)
  })

  it('VQ eval on gpu.js (cpu mode) gives the reference indices through the nested kernel', async () => {
    const init = vq.init(random.keyFromSeed(3))
    const x = randn([2, 5, 8], 11)
    const want = await applyQ(cpuBackend(), vq, init, x)
    const got = await applyQ(gpuJsBackend('cpu'), vq, init, x)
    expect(Array.from(got.indices.data)).toEqual(Array.from(want.indices.data))
  })

  it('FSQ forward is three kernels: the codes, their output copy, the indices (bound, round and scale fused)', () => {
    const q = orThrow(fsq({ levels: [8, 5, 5, 5] }))
    const kernels = planKernels(plan(q, [2, 6, 4]))
    expect(kernels).toHaveLength(3)
    // one loop over the levels, in the index kernel only
    expect(kernels.map((k) => k.nodes.filter((n) => n.k === 'reduce').length)).toEqual([0, 0, 1])
  })
})

