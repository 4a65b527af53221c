import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { decodeLFQ } from '../src/lfq/config.js'
import { makeLFQ } from '../src/lfq/lfq.js'
import { applyOnHost } from '../src/run.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn } from './helpers.js'

/** Inputs on a grid that stays away from 0, so signs (and nearest codes) are unambiguous. */
const awayFromZero = (t: HostTensor) => tensorOf(Float32Array.from(t.data, (v) => (Math.abs(v) < 1e-3 ? 0.25 : v)), t.shape)

/** Float64 entropy terms of LFQ for tokens (M, c, d) against its ±scale codebook. */
function entropyTerms64(x: number[][][], d: number, scale: number, invT: number, gamma: number) {
  const K = 2 ** d
  const code = (k: number, j: number) => ((Math.floor(k / 2 ** (d - 1 - j)) % 2) * 2 - 1) * scale
  const H = (p: number[]) => p.reduce((s, v) => s - v * Math.log(Math.max(v, 1e-5)), 0)
  const c = x[0]!.length
  const probs = x.map((tok) =>
    tok.map((v) => {
      const logits = Array.from({ length: K }, (_, k) => 2 * invT * v.reduce((s, xi, j) => s + xi * code(k, j), 0))
      const m = Math.max(...logits)
      const e = logits.map((l) => Math.exp(l - m))
      const z = e.reduce((a, b) => a + b, 0)
      return e.map((v2) => v2 / z)
    }),
  )
  const perSample = probs.flat().reduce((s, p) => s + H(p), 0) / (probs.length * c)
  let batch = 0
  for (let ci = 0; ci < c; ci++) {
    const avg = Array.from({ length: K }, (_, k) => probs.reduce((s, p) => s + p[ci]![k]!, 0) / probs.length)
    batch += H(avg) / c
  }
  return { perSample, batch, aux: perSample - gamma * batch }
}

function tokens(x: HostTensor, c: number, d: number): number[][][] {
  const v = arr(x), M = v.length / (c * d)
  return Array.from({ length: M }, (_, m) => Array.from({ length: c }, (_, ci) => v.slice((m * c + ci) * d, (m * c + ci + 1) * d)))
}

describe.each(backends.map((b) => [b.name, b] as const))('LFQ on %s', (_name, backend) => {
  test.prop(
    [fc.integer({ min: 1, max: 5 }), fc.integer({ min: 1, max: 2 }), fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }), fc.constantFrom('bnd', 'image'), fc.boolean(), fc.nat(1000)],
    { numRuns: 40 },
  )('shapes, bit order (dim 0 most significant, 0 -> negative code) and indicesToCodes(indices) == quantized', async (bits, c, dim, layout, spherical, seed) => {
    const q = makeLFQ(orThrow(decodeLFQ({ codebook_size: 2 ** bits, num_codebooks: c, spherical, ...(dim ? { dim } : {}) })))
    const init = q.init(random.keyFromSeed(seed))
    const D = q.config.dim
    const x = randn(layout === 'bnd' ? [2, 3, D] : [1, D, 2, 2], seed)
    const r = await applyQ(backend, q, init, x)
    expect(r.quantized.shape).toEqual(x.shape)
    const spatial = layout === 'bnd' ? [3] : [2, 2]
    expect(r.indices.shape).toEqual([layout === 'bnd' ? 2 : 1, ...spatial, ...(c > 1 ? [c] : [])])
    expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
    if (!q.config.has_projections && layout === 'bnd') {
      // the index from the signs, most significant bit first; x <= 0 gives bit 0
      const xv = arr(x), idx = arr(r.indices)
      for (let t = 0; t < idx.length; t++) {
        let want = 0
        for (let j = 0; j < bits; j++) want = want * 2 + (xv[t * bits + j]! > 0 ? 1 : 0)
        expect(idx[t]).toBe(want)
      }
    }
  })

  test('an input of exactly 0 maps to the negative code', async () => {
    const q = makeLFQ(orThrow(decodeLFQ({ codebook_size: 4 })))
    const init = q.init(random.keyFromSeed(0))
    const r = await applyQ(backend, q, init, tensorOf([0, 1, -0, -1], [1, 2, 2]))
    expect(arr(r.quantized)).toEqual([-1, 1, -1, -1])
    expect(arr(r.indices)).toEqual([1, 0])
  })

  test.prop([fc.integer({ min: 1, max: 5 }), fc.double({ min: 0.25, max: 2, noNaN: true }), fc.boolean(), fc.nat(1000)], { numRuns: 40 })(
    'distance equivalence: nearest code by euclidean distance == largest dot product (unit-norm and unnormalized inputs)',
    async (bits, scale, spherical, seed) => {
      const q = makeLFQ(orThrow(decodeLFQ({ codebook_size: 2 ** bits, codebook_scale: scale, spherical })))
      const init = q.init(random.keyFromSeed(seed))
      let x = awayFromZero(randn([1, 6, bits], seed, 3))
      if (spherical) {
        const v = arr(x)
        x = tensorOf(v.map((a, i) => a / Math.hypot(...v.slice(Math.floor(i / bits) * bits, Math.floor(i / bits) * bits + bits))), x.shape)
      }
      const r = await applyQ(backend, q, init, x)
      const cb = arr(init.state['codebook']!)
      const K = 2 ** bits
      const codeRow = (k: number) => {
        const row = cb.slice(k * bits, (k + 1) * bits)
        if (!spherical) return row
        const n = Math.hypot(...row)
        return row.map((v) => (v / n) * scale)
      }
      const xv = arr(x), idx = arr(r.indices)
      for (let t = 0; t < idx.length; t++) {
        const xt = xv.slice(t * bits, (t + 1) * bits)
        let bestD = -1, bestDist = Infinity, bestDot = -Infinity, bestP = -1
        for (let k = 0; k < K; k++) {
          const e = codeRow(k)
          const dist = e.reduce((s, v, j) => s + (v - xt[j]!) ** 2, 0)
          const dot = e.reduce((s, v, j) => s + v * xt[j]!, 0)
          if (dist < bestDist) (bestDist = dist), (bestD = k)
          if (dot > bestDot) (bestDot = dot), (bestP = k)
        }
        expect(bestD).toBe(bestP)
        expect(idx[t]).toBe(bestD)
      }
    },
  )

  test.prop(
    [fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 2 }), fc.constantFrom(1, 5, 100), fc.double({ min: 0, max: 2, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), fc.nat(1000)],
    { numRuns: 30 },
  )('entropy and commitment terms match a direct float64 computation', async (bits, c, invT, gamma, commitW, seed) => {
    const q = makeLFQ(
      orThrow(decodeLFQ({ codebook_size: 2 ** bits, num_codebooks: c, inv_temperature: invT, diversity_gamma: gamma, commitment_loss_weight: commitW, entropy_loss_weight: 0.1 })),
    )
    const init = q.init(random.keyFromSeed(seed))
    const x = randn([2, 5, bits * c], seed, 0.5)
    const r = await applyQ(backend, q, init, x, { training: true })
    const want = entropyTerms64(tokens(x, c, bits), bits, 1, invT, gamma)
    const commit = arr(x).reduce((s, v) => s + (v - (v > 0 ? 1 : -1)) ** 2, 0) / x.data.length
    const close = (got: number, w: number) => expect(Math.abs(got - w)).toBeLessThan(2e-5 * Math.max(1, Math.abs(w)))
    close(r.losses['per_sample_entropy']!.data[0]!, want.perSample)
    close(r.losses['batch_entropy']!.data[0]!, want.batch)
    close(r.losses['commitment']!.data[0]!, commitW > 0 ? commit : 0)
    close(r.loss.data[0]!, want.aux * 0.1 + (commitW > 0 ? commit : 0) * commitW)
    // eval gives zero losses
    const ev = await applyQ(backend, q, init, x)
    expect(ev.loss.data[0]).toBe(0)
  })

  test.prop([fc.integer({ min: 2, max: 4 }), fc.double({ min: 0.2, max: 0.9, noNaN: true }), fc.nat(1000)], { numRuns: 20 })(
    'frac_per_sample_entropy uses the keyed subset of int(M·frac) tokens for both entropies',
    async (bits, frac, seed) => {
      const q = makeLFQ(orThrow(decodeLFQ({ codebook_size: 2 ** bits, frac_per_sample_entropy: frac, inv_temperature: 1 })))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 6, bits], seed)
      const key = [seed, 7] as const
      const r = await applyQ(backend, q, init, x, { training: true, key })
      const M = 12, k = Math.floor(M * frac)
      const u = random.uniformHost(key, M)
      const chosen = Array.from({ length: M }, (_, i) => i).sort((a, b) => u[a]! - u[b]! || a - b).slice(0, k)
      const all = tokens(x, 1, bits)
      const want = entropyTerms64(chosen.map((i) => all[i]!), bits, 1, 1, 1)
      expect(Math.abs(r.losses['per_sample_entropy']!.data[0]! - want.perSample)).toBeLessThan(2e-5)
      expect(Math.abs(r.losses['batch_entropy']!.data[0]! - want.batch)).toBeLessThan(2e-5)
      const noKey = await applyOnHost(q, { ...init, x, training: true }, backend)
      expect(E.isLeft(noKey) && noKey.left.message).toMatch(/needs a random key/)
    },
  )

  test('per-layer codebook scale: codes are ±scale and the training output is x + (q - x)', async () => {
    const q = makeLFQ(orThrow(decodeLFQ({ codebook_size: 8, codebook_scale: 0.25 })))
    const init = q.init(random.keyFromSeed(3))
    const x = randn([1, 4, 3], 3)
    const r = await applyQ(backend, q, init, x, { training: true })
    const xv = arr(x)
    arr(r.quantized).forEach((v, i) => {
      const qv = xv[i]! > 0 ? 0.25 : -0.25
      expect(v).toBe(Math.fround(xv[i]! + Math.fround(qv - xv[i]!)))
    })
  })
})
