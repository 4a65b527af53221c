import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { simVQ } from '../src/simvq/simvq.js'
import type { Init, Quantizer } from '../src/quantizer.js'
import { orThrow, randn } from './helpers.js'
import { dot, expectNear, gradRun, rotationGrad, rows } from './grad-helpers.js'

/**
 * Gradients through VectorQuantize and SimVQ (issue 5), checked against float64 formulas of the
 * reference (vector-quantize-pytorch's `rotate_to` / `efficient_rotation_trick_transform`):
 *
 *   u = x/|x|, q = c/|c|, v = (u + q)/|u + q|  (all detached), s = |c|/|x|  (detached)
 *   out = s · (x − 2 (x·v) v + 2 (x·u) q) = s · R x   with R = I − 2 v vᵀ + 2 q uᵀ
 *
 * so out equals the code c (R maps u onto q), d out/d x = s·R and the gradient of sum(w · out)
 * is s · Rᵀ w = s · (w − 2 v (v·w) + 2 u (q·w)). No gradient reaches the codebook through the
 * rotation (q, v and s are all detached); a learnable codebook learns from the commitment loss
 * mse(code, x) only. Straight-through (x + stopgrad(c − x)) passes w unchanged.
 */

const backend = cpuBackend()
const D = 4
const K = 8
/** float32 rounding of a handful of ops on O(1) values, relative to the largest element */
const TOL = 2e-5

/** Rows of a normal draw times `scale`, redrawn until the nearest code (float64) wins by `margin`. */
function drawAwayFromTies(n: number, seed: number, scale: number, codes: number[][], margin = 1e-3): { x: HostTensor; ind: number[] } {
  const pool = random.normalHost(random.keyFromSeed(seed), 64 * n * D)
  let at = 0
  const data: number[] = [], ind: number[] = []
  while (ind.length < n) {
    if (at + D > pool.length) throw new Error('drawAwayFromTies: ran out of draws')
    const row = Array.from(pool.subarray(at, at + D), (v) => Math.fround(v * scale))
    at += D
    const dist = codes.map((c) => c.reduce((s, cv, j) => s + (row[j]! - cv) ** 2, 0))
    const order = dist.map((_, k) => k).sort((a, b) => dist[a]! - dist[b]!)
    if (dist[order[1]!]! - dist[order[0]!]! < margin * Math.max(1, dist[order[0]!]!)) continue
    data.push(...row)
    ind.push(order[0]!)
  }
  return { x: tensorOf(data, [n / 5, 5, D]), ind }
}

/** Training output equals the nearest code, and its gradient w.r.t. x is rotationGrad row by row. */
async function expectRotationTrick(q: Quantizer, init: Init, codes: number[][], seed: number, scale: number): Promise<void> {
  const { x, ind } = drawAwayFromTies(10, seed + 1, scale, codes)
  const w = randn(x.shape, seed + 2)
  const r = await gradRun(backend, q, init, x, w, { training: true })
  expect(Array.from(r.indices.data)).toEqual(ind)
  expectNear(r.quantized.data, ind.flatMap((k) => codes[k]!), TOL, 'quantized')
  const xs = rows(x, D), ws = rows(w, D)
  expectNear(r.gx.data, xs.flatMap((xr, i) => rotationGrad(xr, codes[ind[i]!]!, ws[i]!)), TOL, 'd/dx')
}

const codebookOf = (init: Init, inParams: boolean): number[][] => rows((inParams ? init.params : init.state)['_codebook.embed']!, D)

describe('VectorQuantize gradients', () => {
  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(0.1, 1, 7)], { numRuns: 30 })(
    'rotation trick: out == code and d sum(w·out)/dx == |c|/|x| · Rᵀ w (float64 formula of rotate_to)',
    async (seed, scale) => {
      const q = orThrow(vectorQuantize({ dim: D, codebook_size: K, rotation_trick: true }))
      const init = q.init(random.keyFromSeed(seed))
      await expectRotationTrick(q, init, codebookOf(init, false), seed, scale)
    },
  )

  it('the rotation gradient is not the straight-through one (the test can tell them apart)', async () => {
    const q = orThrow(vectorQuantize({ dim: D, codebook_size: K, rotation_trick: true }))
    const init = q.init(random.keyFromSeed(3))
    const { x } = drawAwayFromTies(10, 4, 1, codebookOf(init, false))
    const w = randn(x.shape, 5)
    const r = await gradRun(backend, q, init, x, w, { training: true })
    const diff = Math.max(...Array.from(r.gx.data, (g, i) => Math.abs(g - w.data[i]!)))
    expect(diff).toBeGreaterThan(0.1)
  })

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.boolean()], { numRuns: 20 })(
    'straight-through (rotation_trick false): d sum(w·out)/dx == w exactly; eval: no gradient reaches x',
    async (seed, ema) => {
      const q = orThrow(vectorQuantize({ dim: D, codebook_size: K, rotation_trick: false, ema_update: ema }))
      const init = q.init(random.keyFromSeed(seed))
      const { x, ind } = drawAwayFromTies(10, seed + 1, 1, codebookOf(init, false))
      const w = randn(x.shape, seed + 2)
      const tr = await gradRun(backend, q, init, x, w, { training: true })
      expect(Array.from(tr.indices.data)).toEqual(ind)
      expect(Array.from(tr.gx.data)).toEqual(Array.from(w.data))
      const ev = await gradRun(backend, q, init, x, w, { training: false })
      expect(Array.from(ev.gx.data).every((g) => g === 0)).toBe(true)
    },
  )

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.boolean(), fc.constantFrom(0.25, 1, 2)], { numRuns: 20 })(
    'learnable codebook: d(sum(w·out) + loss)/d embed == β·2/(N·d)·Σ_{i→k}(e_k − x_i) (commitment only), d/dx adds β·2/(N·d)(x − e)',
    async (seed, rotation, beta) => {
      const q = orThrow(vectorQuantize({ dim: D, codebook_size: K, rotation_trick: rotation, learnable_codebook: true, ema_update: false, commitment_weight: beta }))
      expect(q.embedInParams).toBe(true)
      const init = q.init(random.keyFromSeed(seed))
      const codes = codebookOf(init, true)
      const { x, ind } = drawAwayFromTies(10, seed + 1, 1, codes)
      const w = randn(x.shape, seed + 2)
      const r = await gradRun(backend, q, init, x, w, { training: true, objective: (res, wt) => res.quantized.mul(wt).sum().add(res.loss) })
      expect(Array.from(r.indices.data)).toEqual(ind)
      const xs = rows(x, D), ws = rows(w, D)
      const N = xs.length, c = (beta * 2) / (N * D)
      const ge = codes.map((e, k) => e.map((ev, j) => ind.reduce((s, kk, i) => (kk === k ? s + c * (ev - xs[i]![j]!) : s), 0)))
      expectNear(r.gparams['_codebook.embed']!.data, ge.flat(), TOL, 'd/d embed')
      // the routed output's gradient plus the commitment loss's gradient w.r.t. x
      const gx = xs.flatMap((xr, i) => {
        const e = codes[ind[i]!]!
        const routed = rotation ? rotationGrad(xr, e, ws[i]!) : ws[i]!
        return routed.map((g, j) => g + c * (xr[j]! - e[j]!))
      })
      expectNear(r.gx.data, gx, TOL, 'd/dx')
      expect(r.loss.data[0]).toBeCloseTo((beta * xs.reduce((s, xr, i) => s + xr.reduce((a, v, j) => a + (v - codes[ind[i]!]![j]!) ** 2, 0), 0)) / (N * D), 5)
    },
  )
})

describe('SimVQ gradients', () => {
  const FROZEN = 'frozen_codebook', WEIGHT = 'code_transform.weight'
  /** code_transform(frozen): cb[k][i] = Σ_j frozen[k][j] · W[i][j], float64 */
  const implicitCodebook = (init: Init) => {
    const fr = rows(init.state[FROZEN]!, D), W = rows(init.params[WEIGHT]!, D)
    return { frozen: fr, cb: fr.map((f) => W.map((wr) => dot(f, wr))) }
  }

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.constantFrom(0.1, 1, 7)], { numRuns: 30 })(
    'rotation trick (default): out == code and d sum(w·out)/dx == |c|/|x| · Rᵀ w',
    async (seed, scale) => {
      const q = orThrow(simVQ({ dim: D, codebook_size: K }))
      expect(q.config.rotation_trick).toBe(true)
      const init = q.init(random.keyFromSeed(seed))
      await expectRotationTrick(q, init, implicitCodebook(init).cb, seed, scale)
    },
  )

  test.prop([fc.integer({ min: 0, max: 10_000 }), fc.boolean(), fc.constantFrom(0.25, 1)], { numRuns: 20 })(
    'code_transform learns only from the commitment loss: dW[i][j] = cw·2/(N·d)·Σ_r (c_r − x_r)[i]·frozen[k_r][j]; d/dx = routed + cw·β·2/(N·d)(x − c)',
    async (seed, rotation, cw) => {
      const beta = 0.25
      const q = orThrow(simVQ({ dim: D, codebook_size: K, rotation_trick: rotation, commitment_weight: cw, input_to_quantize_commit_loss_weight: beta }))
      const init = q.init(random.keyFromSeed(seed))
      const { frozen, cb } = implicitCodebook(init)
      const { x, ind } = drawAwayFromTies(10, seed + 1, 1, cb)
      const w = randn(x.shape, seed + 2)
      const r = await gradRun(backend, q, init, x, w, { training: true, objective: (res, wt) => res.quantized.mul(wt).sum().add(res.loss) })
      expect(Array.from(r.indices.data)).toEqual(ind)
      const xs = rows(x, D), ws = rows(w, D)
      const c = (2 * cw) / (xs.length * D)
      const gW = Array.from({ length: D }, (_, i) =>
        Array.from({ length: D }, (_, j) => xs.reduce((s, xr, rr) => s + c * (cb[ind[rr]!]![i]! - xr[i]!) * frozen[ind[rr]!]![j]!, 0)),
      )
      expectNear(r.gparams[WEIGHT]!.data, gW.flat(), TOL, 'd/dW')
      const gx = xs.flatMap((xr, i) => {
        const e = cb[ind[i]!]!
        const routed = rotation ? rotationGrad(xr, e, ws[i]!) : ws[i]!
        return routed.map((g, j) => g + c * beta * (xr[j]! - e[j]!))
      })
      expectNear(r.gx.data, gx, TOL, 'd/dx')
    },
  )
})
