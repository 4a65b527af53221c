import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { fsq } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { latentQuantize } from '../src/latent/latent.js'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { orThrow, randn } from './helpers.js'
import { dot, expectNear, gradRun, norm, rotationGrad, rows } from './grad-helpers.js'

/**
 * Straight-through gradients (issue 5) of the scalar and residual quantizers, each checked against
 * a float64 formula of the reference (vector-quantize-pytorch) computed here:
 *
 * - FSQ: round_ste/floor_ste pass the gradient of the bound: d/dz = (1 − tanh²(z + shift))·halfL/halfWidth
 *   (symmetric: (1 − tanh² z)·(L−1)/2·2/(L−1)); with bound_hard_clamp, 1{−1 < z + shift < 1} instead of 1 − tanh².
 * - LFQ: x + stopgrad(q − x) after the optional soft clamp tanh(x/c)·c (d/dx = 1 − tanh²(x/c)) and,
 *   when spherical, after l2norm(x)·scale (d/dx = scale·(I − u uᵀ)/|x|).
 * - LatentQuantize: z + stopgrad(q − z), so w passes unchanged; its losses are
 *   c·mse(x.detach(), out) + q·mse(out.detach(), x), so d loss/dx = (c − q)·2/M·(out − x).
 * - ResidualFSQ / ResidualVQ: residual_{k+1} = residual_k − stopgrad(quantized_k) keeps
 *   d residual_k/dx = I, so every layer's straight-through adds its own Jacobian: the total is the
 *   sum over layers (num_quantizers · w for ResidualVQ with straight-through, not w).
 */

const backend = cpuBackend()
const TOL = 2e-5

/** Elements of a normal draw times `scale`, redrawn while `bad(value, position)` holds. */
function drawElements(shape: readonly number[], seed: number, scale: number, bad: (v: number, pos: number) => boolean): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1)
  const pool = random.normalHost(random.keyFromSeed(seed), 64 * n)
  let at = 0
  const data: number[] = []
  while (data.length < n) {
    if (at >= pool.length) throw new Error('drawElements: ran out of draws')
    const v = Math.fround(pool[at++]! * scale)
    if (!bad(v, data.length)) data.push(v)
  }
  return tensorOf(data, shape)
}

const sech2 = (v: number) => 1 - Math.tanh(v) ** 2

describe('FSQ: gradient of the bound times w', () => {
  const levels = [8, 5, 4, 3]
  const d = levels.length
  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.boolean(), fc.boolean(), fc.constantFrom(0.5, 2)], { numRuns: 40 })(
    'd sum(w·out)/dz == w · d bound/dz (float64), in training and eval alike',
    async (seed, preserve, hard, scale) => {
      const q = orThrow(fsq({ levels, preserve_symmetry: preserve, bound_hard_clamp: hard }))
      const init = q.init(random.keyFromSeed(seed))
      const halfL = levels.map((l) => ((l - 1) * 1.001) / 2)
      const offset = levels.map((l) => (l % 2 === 0 ? 0.5 : 0))
      const shift = levels.map((_, i) => (hard ? offset[i]! / halfL[i]! : Math.atanh(offset[i]! / halfL[i]!)))
      const arg = (v: number, j: number) => (preserve ? v : v + shift[j]!)
      // a hard clamp has a kink at ±1: keep the draws 1e-3 away from it
      const x = drawElements([2, 5, d], seed, scale, (v, pos) => hard && Math.abs(Math.abs(arg(v, pos % d)) - 1) < 1e-3)
      const w = randn(x.shape, seed + 1)
      const slope = (j: number) => (preserve ? 1 : halfL[j]! / Math.floor(levels[j]! / 2))
      const want = Array.from(x.data, (v, i) => {
        const j = i % d, a = arg(v, j)
        const bound = hard ? (Math.abs(a) < 1 ? 1 : 0) : sech2(a)
        return w.data[i]! * bound * slope(j)
      })
      for (const training of [true, false]) {
        const r = await gradRun(backend, q, init, x, w, { training })
        expectNear(r.gx.data, want, TOL, `d/dx (training ${training})`)
      }
    },
  )
})

describe('LFQ: straight-through after the soft clamp', () => {
  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(null, 1, 1.5, 3)], { numRuns: 30 })(
    'd sum(w·out)/dx == w·(1 − tanh²(x/c)), or exactly w without a soft clamp; no gradient in eval',
    async (seed, clamp) => {
      const q = orThrow(lfq({ dim: 4, codebook_size: 16, soft_clamp_input_value: clamp }))
      expect(q.config.has_projections).toBe(false)
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 5, 4], seed, 2)
      const w = randn(x.shape, seed + 1)
      const r = await gradRun(backend, q, init, x, w, { training: true })
      if (clamp === null) expect(Array.from(r.gx.data)).toEqual(Array.from(w.data))
      else expectNear(r.gx.data, Array.from(x.data, (v, i) => w.data[i]! * sech2(v / clamp)), TOL, 'd/dx')
      // the forward value is ±codebook_scale either way
      expectNear(r.quantized.data, Array.from(x.data, (v) => ((clamp === null ? v : Math.tanh(v / clamp)) > 0 ? 1 : -1)), 1e-6, 'quantized')
      const ev = await gradRun(backend, q, init, x, w, { training: false })
      expect(Array.from(ev.gx.data).every((g) => g === 0)).toBe(true)
    },
  )

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(1, 0.5)], { numRuns: 20 })(
    'spherical (BSQ): d sum(w·out)/dx == scale·(w − u (u·w))/|x| per codebook row',
    async (seed, scale) => {
      const q = orThrow(lfq({ dim: 4, codebook_size: 16, spherical: true, codebook_scale: scale }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 5, 4], seed)
      const w = randn(x.shape, seed + 1)
      const r = await gradRun(backend, q, init, x, w, { training: true })
      const ws = rows(w, 4)
      const want = rows(x, 4).flatMap((xr, i) => {
        const nx = norm(xr), u = xr.map((v) => v / nx), uw = dot(u, ws[i]!)
        return ws[i]!.map((wv, j) => (scale * (wv - u[j]! * uw)) / nx)
      })
      expectNear(r.gx.data, want, TOL, 'd/dx')
    },
  )
})

describe('LatentQuantize: straight-through and its two losses', () => {
  const levels = [5, 4, 3]
  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(0.1, 0.3), fc.constantFrom(0.1, 0.05, 0)], { numRuns: 30 })(
    'd sum(w·out)/dx == w; d loss/dx == (c − q)·2/M·(out − x); values_per_latent get no gradient (as the reference)',
    async (seed, cw, qw) => {
      const q = orThrow(latentQuantize({ levels, dim: 3, commitment_loss_weight: cw, quantization_loss_weight: qw }))
      const init = q.init(random.keyFromSeed(seed))
      const values = levels.map((_, i) => Array.from(init.params[`values_per_latent.${i}`]!.data))
      // channel-first (b, dim, n); keep every element 1e-3 away from a midpoint between two values
      const dimOf = (pos: number) => Math.floor(pos / 5) % 3
      const nearest = (v: number, j: number) => values[j]!.reduce((best, c) => (Math.abs(v - c) < Math.abs(v - best) ? c : best))
      const tie = (v: number, j: number) => {
        const ds = values[j]!.map((c) => Math.abs(v - c)).sort((a, b) => a - b)
        return ds[1]! - ds[0]! < 1e-3
      }
      const x = drawElements([2, 3, 5], seed, 0.4, (v, pos) => tie(v, dimOf(pos)))
      const w = randn(x.shape, seed + 1)
      const out = Array.from(x.data, (v, i) => nearest(v, dimOf(i)))

      const ste = await gradRun(backend, q, init, x, w, { training: true })
      expect(Array.from(ste.quantized.data)).toEqual(out)
      expect(Array.from(ste.gx.data)).toEqual(Array.from(w.data))

      const M = x.data.length
      const lossOnly = await gradRun(backend, q, init, x, w, { training: true, objective: (res) => res.loss })
      expectNear(lossOnly.gx.data, Array.from(x.data, (v, i) => ((cw - qw) * 2 * (out[i]! - v)) / M), TOL, 'd loss/dx')
      expect(lossOnly.loss.data[0]).toBeCloseTo(((cw + qw) * out.reduce((s, o, i) => s + (o - x.data[i]!) ** 2, 0)) / M, 6)
      for (let i = 0; i < levels.length; i++) expect(Array.from(lossOnly.gparams[`values_per_latent.${i}`]!.data).every((g) => g === 0)).toBe(true)
    },
  )
})

describe('ResidualFSQ: each layer straight-through, the Jacobians add up', () => {
  const levels = [8, 5, 5]
  const d = levels.length, nq = 3
  // as the reference: layers are symmetry-preserving FSQs with bound_hard_clamp (the default),
  // after a soft clamp c = 1 + 1/(L − 1); layer k sees residual / L^-k and its code is scaled back
  const c = levels.map((l) => 1 + 1 / (l - 1))

  /** Per element: which layers' clamps are inactive, or null if a clamp or floor decision is within 1e-3 (float64). */
  function layersInRange(v: number, j: number): boolean[] | null {
    const L = levels[j]!
    let res = Math.tanh(v / c[j]!) * c[j]!
    const inside: boolean[] = []
    for (let k = 0; k < nq; k++) {
      const s = L ** -k
      const z = res / s
      if (Math.abs(Math.abs(z) - 1) < 1e-3) return null
      const bracket = ((L - 1) * (Math.max(-1, Math.min(1, z)) + 1)) / 2 + 0.5
      if (Math.abs(bracket - Math.round(bracket)) < 1e-3) return null
      inside.push(Math.abs(z) < 1)
      res -= (Math.floor(bracket) * (2 / (L - 1)) - 1) * s
    }
    return inside
  }

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(0.3, 1, 3)], { numRuns: 30 })(
    'd sum(w·out)/dx == w·(1 − tanh²(x/c))·Σ_k 1{layer k unclamped}',
    async (seed, scale) => {
      const q = orThrow(residualFSQ({ levels, num_quantizers: nq, dim: d }))
      const init = q.init(random.keyFromSeed(seed))
      const x = drawElements([2, 5, d], seed, scale, (v, pos) => layersInRange(v, pos % d) === null)
      const w = randn(x.shape, seed + 1)
      const want = Array.from(x.data, (v, i) => {
        const j = i % d
        const active = layersInRange(v, j)!.filter(Boolean).length
        return w.data[i]! * sech2(v / c[j]!) * active
      })
      const r = await gradRun(backend, q, init, x, w, { training: true })
      expectNear(r.gx.data, want, TOL, 'd/dx')
    },
  )

  it('small inputs keep every layer unclamped: the gradient is about num_quantizers · w, not w', async () => {
    const q = orThrow(residualFSQ({ levels: [5, 5], num_quantizers: 2, dim: 2 }))
    const x = tensorOf([0.01, -0.02, 0.03, 0.015], [1, 2, 2])
    const w = tensorOf([1, 1, 1, 1], [1, 2, 2])
    const r = await gradRun(backend, q, q.init(random.keyFromSeed(1)), x, w, { training: true })
    // every layer sees |residual / scale| well inside (−1, 1): each contributes the identity
    Array.from(r.gx.data).forEach((g, i) => expect(g).toBeCloseTo(2 * sech2(x.data[i]! / 1.25), 5))
  })
})

describe('ResidualVQ (no projections): each layer routes the gradient, the routes add up', () => {
  const D = 4, K = 8, nq = 3

  /** float64 residual VQ over rows: per layer the residual and its code; null if a nearest code wins by < 1e-3. */
  function simulate(rowsX: number[][], books: number[][][]): { res: number[][]; code: number[][] }[] | null {
    const out: { res: number[][]; code: number[][] }[] = rowsX.map(() => ({ res: [], code: [] }))
    for (let r = 0; r < rowsX.length; r++) {
      let res = rowsX[r]!
      for (let k = 0; k < nq; k++) {
        const dist = books[k]!.map((e) => e.reduce((s, ev, j) => s + (res[j]! - ev) ** 2, 0))
        const order = dist.map((_, i) => i).sort((a, b) => dist[a]! - dist[b]!)
        if (dist[order[1]!]! - dist[order[0]!]! < 1e-3 * Math.max(1, dist[order[0]!]!)) return null
        const e = books[k]![order[0]!]!
        out[r]!.res.push(res)
        out[r]!.code.push(e)
        res = res.map((v, j) => v - e[j]!)
      }
    }
    return out
  }

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.boolean(), fc.boolean()], { numRuns: 30 })(
    'straight-through: d sum(w·out)/dx == num_quantizers·w; rotation trick: Σ_k |c_k|/|r_k|·R_kᵀ w over the layers’ residuals r_k',
    async (seed, rotation, shared) => {
      const q = orThrow(residualVQ({ dim: D, codebook_size: K, num_quantizers: nq, rotation_trick: rotation, shared_codebook: shared }))
      const init = q.init(random.keyFromSeed(seed))
      const books = Array.from({ length: nq }, (_, k) => rows(init.state[`layers.${shared ? 0 : k}._codebook.embed`]!, D))
      let x: HostTensor | undefined, sim: ReturnType<typeof simulate> = null
      for (let attempt = 0; attempt < 50 && !sim; attempt++) {
        x = randn([2, 5, D], seed * 100 + attempt)
        sim = simulate(rows(x, D), books)
      }
      if (!sim || !x) throw new Error('no draw away from ties in 50 attempts')
      const w = randn(x.shape, seed + 1)
      const r = await gradRun(backend, q, init, x, w, { training: true })
      const ws = rows(w, D)
      const want = sim.flatMap((s, i) =>
        rotation
          ? s.res.map((res, k) => rotationGrad(res, s.code[k]!, ws[i]!)).reduce((a, g) => a.map((v, j) => v + g[j]!))
          : ws[i]!.map((v) => nq * v),
      )
      expectNear(r.gx.data, want, rotation ? TOL : 1e-6, 'd/dx')
      expectNear(r.quantized.data, sim.flatMap((s) => s.code.reduce((a, e) => a.map((v, j) => v + e[j]!))), TOL, 'quantized')
    },
  )
})
