import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { indicesToCodesOnHost } from '../src/run.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { indexRangeOf } from '../src/index-range.js'
import { applyQ, orThrow } from './helpers.js'
import { nodeLanes, xFor, zoo } from './zoo.js'

/**
 * Decoding indices behaves the same on every backend (issue 12): an index outside the codebook
 * is a Left naming the index, its position and the valid range, before anything runs; residual
 * quantizers accept -1 for a layer skipped by quantize dropout and decode it as zeros.
 */
for (const lane of nodeLanes)
  describe(`index range on ${lane.name}`, async () => {
    const made = await lane.make()
    if ('skip' in made) {
      console.warn(`[quantizers/index-range] ${lane.name} is SKIPPED: ${made.skip}`)
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      return
    }
    const backend = made as Backend
    for (const e of zoo)
      it(`${e.name}: an out-of-range index is a Left naming it; valid indices decode`, async () => {
        const init = e.q.init(random.keyFromSeed(3))
        const indices = (await applyQ(backend, e.q, init, xFor(e))).indices
        const range = indexRangeOf(e.q, indices.shape.length)
        expect(range, 'every quantizer states its index range').toBeDefined()
        const last = indices.data.length - 1
        const at = (v: number): HostTensor => {
          const d = Int32Array.from(indices.data)
          d[last] = v
          return tensorOf(d, indices.shape, 'int32')
        }
        const size = range!.size(indices.shape.map((s) => s - 1))!
        const decode = (t: HostTensor) => indicesToCodesOnHost(e.q, init.params, t, backend, undefined, init.state)
        expect(E.isRight(await decode(at(size - 1))), 'the largest valid index decodes').toBe(true)
        for (const bad of [size, range!.dropped ? -2 : -1, 2 ** 30]) {
          const got = await decode(at(bad))
          expect(E.isLeft(got), `index ${bad}`).toBe(true)
          if (E.isLeft(got)) {
            expect(got.left.kind).toBe('input')
            expect(got.left.message).toContain(`index ${bad} at position [${indices.shape.map((s) => s - 1).join(',')}]`)
            expect(got.left.message).toContain(`outside [0, ${size})`)
          }
        }
      })

    it('ResidualVQ with per-layer codebook sizes checks each layer against its own size; -1 decodes as a skipped layer', async () => {
      const q = orThrow(residualVQ({ dim: 4, codebook_size: [8, 4], num_quantizers: 2, quantize_dropout: true }))
      const init = q.init(random.keyFromSeed(4))
      const idx = (a: number, b: number) => tensorOf([a, b], [1, 1, 2], 'int32')
      expect(E.isRight(await indicesToCodesOnHost(q, init.params, idx(7, 3), backend, undefined, init.state))).toBe(true)
      const bad = await indicesToCodesOnHost(q, init.params, idx(7, 4), backend, undefined, init.state)
      expect(E.isLeft(bad) && bad.left.message).toContain('index 4 at position [0,0,1] (flat 1) is outside [0, 4)')
      const firstOnly = await indicesToCodesOnHost(q, init.params, idx(5, -1), backend, undefined, init.state)
      const layer0 = await indicesToCodesOnHost(q, init.params, tensorOf([5], [1, 1, 1], 'int32'), backend, undefined, init.state)
      expect(E.isRight(firstOnly) && E.isRight(layer0)).toBe(true)
      if (E.isRight(firstOnly) && E.isRight(layer0)) expect(Array.from(firstOnly.right.data)).toEqual(Array.from(layer0.right.data))
    })
  })
