import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import type { HostTensor } from '@tessera/core'
import { random, scoped, tensorOf } from '@tessera/core'
import { decodeGroupedResidualFSQ, decodeGroupedResidualLFQ, makeGroupedResidualFSQ, makeGroupedResidualLFQ } from '../src/grouped/grouped-residual.js'
import { decodeLatentQuantize, latentValues, makeLatentQuantize } from '../src/latent/latent.js'
import { groupPrefix } from '../src/grouped/grouped.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn } from './helpers.js'

/** Slice `count` features starting at `start` on an axis of a host tensor. */
function sliceAxis(t: HostTensor, axis: number, start: number, count: number): HostTensor {
  const shape = [...t.shape]
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1)
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1)
  const n = shape[axis]!
  const out = new Float32Array(outer * count * inner)
  for (let o = 0; o < outer; o++)
    for (let c = 0; c < count; c++)
      for (let i = 0; i < inner; i++) out[(o * count + c) * inner + i] = t.data[(o * n + start + c) * inner + i]!
  shape[axis] = count
  return tensorOf(out, shape)
}

describe.each(backends.map((b) => [b.name, b] as const))('grouped and latent quantizers on %s', (_name, backend) => {
  test.prop([fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 3 }), fc.boolean(), fc.boolean(), fc.nat(1000)], { numRuns: 25 })(
    'grouped == concatenation of its groups (FSQ and LFQ residual groups, last axis or axis 1)',
    async (groups, nq, useLFQ, imageFmap, seed) => {
      const perGroup = 3
      const dim = groups * perGroup
      const q = useLFQ
        ? makeGroupedResidualLFQ(orThrow(decodeGroupedResidualLFQ({ dim, groups, num_quantizers: nq, codebook_size: 4 })))
        : makeGroupedResidualFSQ(
            orThrow(decodeGroupedResidualFSQ({ dim, groups, num_quantizers: nq, levels: [5, 3], accept_image_fmap: imageFmap, is_channel_first: imageFmap })),
          )
      const image = imageFmap && !useLFQ
      const init = q.init(random.keyFromSeed(seed))
      const x = randn(image ? [2, dim, 2, 2] : [2, 4, dim], seed)
      const r = await applyQ(backend, q, init, x)
      expect(r.quantized.shape).toEqual(x.shape)
      expect(r.indices.shape[0]).toBe(groups)
      const axis = image ? 1 : 2
      const parts: HostTensor[] = []
      for (let g = 0; g < groups; g++) {
        const sub = q.spec.groups[g]!
        const gi = { params: scoped(init.params, groupPrefix(g)), state: scoped(init.state, groupPrefix(g)) }
        const rg = await applyQ(backend, sub, gi, sliceAxis(x, axis, g * perGroup, perGroup))
        parts.push(rg.quantized)
        const per = r.indices.data.length / groups
        expect(arr(r.indices).slice(g * per, (g + 1) * per)).toEqual(arr(rg.indices))
      }
      parts.forEach((p, g) => expect(arr(sliceAxis(r.quantized, axis, g * perGroup, perGroup))).toEqual(arr(p)))
      expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
    },
  )

  test.prop([fc.array(fc.integer({ min: 2, max: 8 }), { minLength: 1, maxLength: 3 }), fc.integer({ min: 1, max: 2 }), fc.boolean(), fc.nat(1000)], { numRuns: 30 })(
    'LatentQuantize: channel-first shapes, outputs on the per-dimension value grids, indicesToCodes(indices) == quantized, train loss',
    async (levels, nc, project, seed) => {
      const E_ = levels.length * nc
      const dim = project ? E_ + 1 : E_
      const q = makeLatentQuantize(orThrow(decodeLatentQuantize({ levels, dim, num_codebooks: nc })))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, dim, 3], seed, 0.4)
      const r = await applyQ(backend, q, init, x)
      expect(r.quantized.shape).toEqual(x.shape)
      expect(r.indices.shape).toEqual(nc > 1 ? [2, 3, nc] : [2, 3])
      // codes are the reference's straight-through z + (v - z) in float32, v the first nearest grid
      // value: v itself only where z and v are within a factor of two (test/latent-reference.test.ts)
      const d = levels.length
      const f32 = Math.fround
      const grids = levels.map(latentValues)
      const z = arr(r.extra['projected']!)
      const codes = arr(r.extra['codes']!)
      expect(codes).toEqual(
        z.map((zi, i) => {
          const g = grids[i % d]!
          const v = g.reduce((best, x) => (Math.abs(f32(zi - x)) < Math.abs(f32(zi - best)) ? x : best), g[0]!)
          return f32(zi + f32(v - zi))
        }),
      )
      // indices: each code scaled to its level, times its basis, summed (float32 terms, rounded once) and truncated
      const basis = levels.map((_, j) => levels.slice(0, j).reduce((a, b) => a * b, 1))
      expect(arr(r.indices)).toEqual(
        Array.from({ length: codes.length / d }, (_, t) => {
          const terms = levels.map((L, j) => f32(f32(f32(f32(codes[t * d + j]! * 2) * Math.floor(L / 2)) + Math.floor(L / 2)) * basis[j]!))
          return Math.trunc(f32(terms.reduce((a, b) => a + b, 0)))
        }),
      )
      // decoding gives the codes back where they are on grids whose scaled values are exact (L in {2, 3, 4, 5, 8})
      const onGrid = codes.every((v, i) => grids[i % d]!.includes(v))
      if (onGrid && levels.every((L) => [2, 3, 4, 5, 8].includes(L))) expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
      expect(r.loss.data[0]).toBe(0)
      const t = await applyQ(backend, q, init, x, { training: true })
      const mse = arr(r.quantized).reduce((s, v, i) => s + (v - x.data[i]!) ** 2, 0) / x.data.length
      expect(Math.abs(t.loss.data[0]! - 0.2 * mse)).toBeLessThan(1e-6 + 1e-5 * mse)
    },
  )

  test('LatentQuantize value grids follow torch: odd L is a two-sided linspace, even L is arange(L)/L - 0.5', () => {
    expect(latentValues(8)).toEqual([-0.5, -0.375, -0.25, -0.125, 0, 0.125, 0.25, 0.375])
    expect(latentValues(5)).toEqual([-0.5, -0.25, 0, 0.25, 0.5])
    expect(latentValues(3)).toEqual([-0.5, 0, 0.5])
    expect(latentValues(7)[6]).toBe(0.5)
  })
})
