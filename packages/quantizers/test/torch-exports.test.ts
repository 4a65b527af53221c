import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import { tensorOf } from '@tessera/core'
import { FLOAT_TOL } from '../src/golden/compare.js'
import { fromSafetensors } from '../src/io/torch.js'
import { applyOnHost } from '../src/run.js'
import { backends, orThrow } from './helpers.js'

/**
 * Files written by scripts/export-torch.py from vector-quantize-pytorch itself (see the folder's
 * README): each loads with one call and, in eval without a key, gives the reference's own outputs on
 * the recorded input (indices exact, floats within 1e-5).
 */
const dir = join(dirname(fileURLToPath(import.meta.url)), 'torch-exports')
const names = readdirSync(dir).filter((f) => f.endsWith('.safetensors')).map((f) => f.replace(/\.safetensors$/, '')).sort()

interface Sample {
  readonly x: { shape: number[]; data: number[] }
  readonly quantized: { shape: number[]; data: number[] }
  readonly indices: { shape: number[]; data: number[] }
}

describe('checkpoints exported from vector-quantize-pytorch', () => {
  it('the folder holds the exports (shared-codebook k-means ResidualVQ, F16, BF16 and F64 files among them)', () => {
    expect(names).toEqual(['fsq_f16', 'grfsq', 'grvq', 'lfq_bf16', 'rfsq', 'rlfq', 'rvq_shared_kmeans', 'simvq', 'vq_cosine_heads', 'vq_kmeans_f64'])
  })

  it.each(names)('%s loads with fromSafetensors and reproduces the reference outputs', async (name) => {
    const loaded = fromSafetensors(readFileSync(join(dir, `${name}.safetensors`)))
    if (E.isLeft(loaded)) throw new Error(`${loaded.left.where}: ${loaded.left.message}`)
    const { quantizer, params, state } = loaded.right
    const want = JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as Sample
    const out = orThrow(await applyOnHost(quantizer, { params, state, x: tensorOf(want.x.data, want.x.shape) }, backends[0]!))
    expect(out.indices.shape).toEqual(want.indices.shape)
    expect(Array.from(out.indices.data)).toEqual(want.indices.data)
    expect(out.quantized.shape).toEqual(want.quantized.shape)
    const worst = Math.max(...Array.from(out.quantized.data, (v, i) => Math.abs(v - want.quantized.data[i]!) / Math.max(1, Math.abs(want.quantized.data[i]!))))
    expect(worst).toBeLessThanOrEqual(FLOAT_TOL)
  })
})
