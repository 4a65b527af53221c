import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import type { HostTensor, Tensor } from '@tessera/core'
import { random, scoped, tensorOf } from '@tessera/core'
import { groupPrefix } from '../src/grouped/grouped.js'
import { decodeGroupedResidualVQ, makeGroupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import { makeResidualVQ } from '../src/residual-vq/residual-vq.js'
import type { Named } from '../src/quantizer.js'
import { applyOnHost, runOnHost } from '../src/run.js'
import { parseGoldenCase } from '../src/golden/format.js'
import { loadCaseState } from '../src/golden/runner.js'
import { goldenDir, orThrow, randn } from './helpers.js'
import { expectAgree } from './host-compare.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'

/**
 * GroupedResidualVQ's return_all_codes: the reference returns a tuple of each group's ResidualVQ
 * all_codes (q, b, ..., dim/groups); Tessera stacks that tuple in group order as
 * `extra.all_codes` (groups, q, b, ..., dim/groups), the layout the golden case stores. Each slice
 * must equal that group's ResidualVQ run alone on its chunk with the same key.
 */

const key = tensorOf([11, 3], [2], 'int32')

describeLanes('grvq-all-codes', nodeLanes, (l) => `GroupedResidualVQ all_codes on ${l.name}`, (backend) => {
  it.each<[string, Record<string, unknown>, readonly number[], boolean]>([
    ['sequences, eval', { dim: 8, groups: 2, num_quantizers: 3, codebook_size: 6 }, [2, 5, 8], false],
    ['sequences, training with quantize dropout (dropped layers give 0 in every group)', { dim: 9, groups: 3, num_quantizers: 3, codebook_size: 6, quantize_dropout: true, decay: 0.5 }, [2, 4, 9], true],
    ['images (channel-first)', { dim: 4, groups: 2, num_quantizers: 2, codebook_size: 5, accept_image_fmap: true }, [2, 4, 3, 2], true],
  ])('%s: extra.all_codes stacks each group\'s ResidualVQ all_codes in group order', async (_name, options, xShape, training) => {
    const cfg = orThrow(decodeGroupedResidualVQ(options))
    const q = makeGroupedResidualVQ(cfg)
    const init = q.init(random.keyFromSeed(2))
    const x = randn(xShape, 6)
    const r = orThrow(await applyOnHost(q, { ...init, x, training, key, options: { returnAllCodes: true } }, backend))
    const all = r.extra['all_codes']!
    const g = cfg.groups, nq = cfg.inner.num_quantizers, cd = cfg.inner.codebook_dim
    const spatial = cfg.accept_image_fmap ? [xShape[0]!, xShape[2]!, xShape[3]!] : xShape.slice(0, -1)
    expect(all.shape).toEqual([g, nq, ...spatial, cd])
    expect(Object.keys(r.extra).filter((k) => /^rvqs\.\d+\.all_codes$/.test(k))).toEqual([])

    // each group alone: its ResidualVQ on its chunk of the features, same key, same options
    const rvq = makeResidualVQ(cfg.inner)
    const axis = cfg.accept_image_fmap ? 1 : xShape.length - 1
    const per = orThrow(
      await runOnHost(backend, [init.params, init.state, x, key] as const, (p, s, xs, k) =>
        (xs as Tensor).split(axis, g).map((chunk, i) => {
          const o = rvq.apply(scoped(p as Named<Tensor>, groupPrefix(i)), scoped(s as Named<Tensor>, groupPrefix(i)), chunk, {
            training,
            key: k as Tensor,
            returnAllCodes: true,
          })
          return { codes: o.extra!['all_codes']!, indices: o.indices }
        }),
      ),
    ) as unknown as { codes: HostTensor; indices: HostTensor }[]
    const size = all.data.length / g
    const slice = (t: HostTensor, i: number, shape: readonly number[]): HostTensor => ({ shape: [...shape], dtype: t.dtype, data: t.data.slice(i * (t.data.length / g), (i + 1) * (t.data.length / g)) } as HostTensor)
    per.forEach((p, i) => {
      // indices exact; codes exactly on exact backends (two programs: the grouped one and the group's alone)
      expectAgree(slice(r.indices, i, p.indices.shape), p.indices, backend.caps, `group ${i} indices`)
      expectAgree(slice(all, i, all.shape.slice(1)), p.codes, backend.caps, `group ${i} all_codes`)
    })
    if (cfg.inner.quantize_dropout) {
      // the groups share the call's key, so they drop the same layers; a dropped layer's codes are 0
      const [, ...rest] = all.shape
      const perLayer = size / nq
      const layerDropped = (grp: number, l: number) => {
        const idx = Array.from(slice(r.indices, grp, [r.indices.data.length / g]).data)
        return idx.filter((_, j) => j % nq === l).every((v) => v === -1)
      }
      expect(rest[0]).toBe(nq)
      let dropped = 0
      for (let l = 0; l < nq; l++)
        for (let grp = 0; grp < g; grp++) {
          expect(layerDropped(grp, l), `layer ${l} dropped alike in group ${grp}`).toBe(layerDropped(0, l))
          if (layerDropped(grp, l)) {
            dropped++
            expect(Array.from(all.data.subarray(grp * size + l * perLayer, grp * size + (l + 1) * perLayer)).every((v) => v === 0)).toBe(true)
          }
        }
      expect(dropped, 'this key drops a layer (so the dropout case tests something)').toBeGreaterThan(0)
    }
    // without the option there is no all_codes
    const plain = orThrow(await applyOnHost(q, { ...init, x, training, key }, backend))
    expect(Object.keys(plain.extra).filter((k) => k.endsWith('all_codes'))).toEqual([])
  })
})

describeLanes('grvq-all-codes', nodeLanes, (l) => `GroupedResidualVQ all_codes against the reference on ${l.name}`, (backend) => {
  it('next/grvq_basic: extra.all_codes equals the reference\'s per-group tuple, stacked as the case stores it', async () => {
    const c = orThrow(parseGoldenCase(await readFile(join(goldenDir, 'next', 'grvq_basic.json'), 'utf8')))
    const q = makeGroupedResidualVQ(orThrow(decodeGroupedResidualVQ(c.kwargs)))
    const init = orThrow(loadCaseState(q, c.state))
    const run = c.runs[0]!
    expect(run.mode).toBe('eval')
    const r = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x: run.inputs['x']!.host, options: { returnAllCodes: true } }, backend))
    const want = run.outputs['all_codes']!.host
    expect(want.shape).toEqual([2, 2, 2, 10, 4])
    expectAgree(r.indices, run.outputs['indices']!.host, backend.caps, 'indices')
    // codes are gathered codebook rows: exact on every backend
    expect(r.extra['all_codes']!.shape).toEqual(want.shape)
    expect(Array.from(r.extra['all_codes']!.data)).toEqual(Array.from(want.data))
  })
})
