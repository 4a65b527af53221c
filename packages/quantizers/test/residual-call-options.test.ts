import { describe, expect, test } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { residualLFQ } from '../src/residual/residual-lfq.js'
import { residualSimVQ } from '../src/simvq/residual-simvq.js'
import { groupedResidualFSQ, groupedResidualLFQ } from '../src/grouped/grouped-residual.js'
import type { Quantizer } from '../src/quantizer.js'
import { pythonRandrange } from '../src/common/python-random.js'
import { applyOnHost, runOnHost } from '../src/run.js'
import { arr, orThrow, randn } from './helpers.js'

/**
 * ResidualFSQ, ResidualLFQ and ResidualSimVQ take the reference forward's `return_all_codes` and
 * `rand_quantize_dropout_fixed_seed` (as ResidualVQ does): `extra.all_codes` is codesFromIndices
 * of the call's own indices, and a seed fixes the last active layer as Python's random does.
 */
const backend = cpuBackend()
type Made = Quantizer & { codesFromIndices(p: Record<string, Tensor>, i: Tensor, s?: Record<string, Tensor>): Tensor }
const cases: [string, Made, number[], number][] = [
  ['ResidualFSQ', orThrow(residualFSQ({ levels: [5, 4, 3], num_quantizers: 3, dim: 5, quantize_dropout: true })) as Made, [2, 6, 5], 3],
  ['ResidualFSQ channel-first', orThrow(residualFSQ({ levels: [5, 4], num_quantizers: 3, dim: 2, is_channel_first: true, quantize_dropout: true })) as Made, [2, 2, 3, 2], 3],
  ['ResidualLFQ', orThrow(residualLFQ({ dim: 6, codebook_size: 16, num_quantizers: 3, quantize_dropout: true })) as Made, [2, 6, 6], 3],
  ['ResidualSimVQ channel-first', orThrow(residualSimVQ({ dim: 4, codebook_size: 8, num_quantizers: 3, channel_first: true, quantize_dropout: true })) as Made, [2, 4, 3], 3],
]
/** Layers that gave an index (not -1), from the (b, ..., q) or channel-first (b, q, ...) indices of the first token. */
const activeLayers = (ix: HostTensor, nq: number, channelFirst: boolean) => {
  const per = ix.data.length / ix.shape[0]! / nq
  return Array.from({ length: nq }, (_, l) => ix.data[channelFirst ? l * per : l]).filter((v) => v !== -1).length
}

describe('residual combinators: returnAllCodes and randQuantizeDropoutFixedSeed', () => {
  test.each(cases)('%s: extra.all_codes is codesFromIndices of the call\'s indices, 0 for a dropped layer', async (_n, q, shape, nq) => {
    const init = q.init(random.keyFromSeed(1))
    const x = randn(shape, 2)
    for (const training of [false, true]) {
      const r = orThrow(await applyOnHost(q, { ...init, x, training, key: tensorOf([3, 4], [2], 'int32'), options: { returnAllCodes: true } } as never, backend))
      const all = r.extra['all_codes']!
      const want = orThrow(await runOnHost(backend, [init.params, r.state, r.indices] as const, (p, s, i) => q.codesFromIndices(p as never, i as Tensor, s as never)))
      expect(all.shape).toEqual(want.shape)
      expect(all.shape[0]).toBe(nq)
      expect(arr(all)).toEqual(arr(want))
      const off = orThrow(await applyOnHost(q, { ...init, x, training, key: tensorOf([3, 4], [2], 'int32') } as never, backend))
      expect(off.extra['all_codes']).toBeUndefined()
      expect(arr(off.indices)).toEqual(arr(r.indices))
    }
  })

  test.each(cases)('%s: a seed cuts where Python\'s random.Random(seed).randrange(0, q) does, whatever the key; eval ignores it', async (name, q, shape, nq) => {
    const init = q.init(random.keyFromSeed(1))
    const x = randn(shape, 2)
    // ResidualFSQ's channel-first indices are (b, q, ...); ResidualSimVQ's stay (b, ..., q)
    const cf = name === 'ResidualFSQ channel-first'
    for (const seed of [0, 1, 2, 7, 42, 9999]) {
      const want = pythonRandrange(seed, 0, nq) + 1
      for (const k of [[1, 2], [9, 9]]) {
        const r = orThrow(await applyOnHost(q, { ...init, x, training: true, key: tensorOf(k, [2], 'int32'), options: { randQuantizeDropoutFixedSeed: seed, returnAllCodes: true } } as never, backend))
        expect(activeLayers(r.indices, nq, cf), `seed ${seed}`).toBe(want)
        const all = r.extra['all_codes']!, per = all.data.length / nq
        for (let l = want; l < nq; l++) expect(Array.from(all.data.subarray(l * per, (l + 1) * per)).every((v) => v === 0), `layer ${l}`).toBe(true)
      }
    }
    const ev = orThrow(await applyOnHost(q, { ...init, x, training: false, options: { randQuantizeDropoutFixedSeed: 0 } } as never, backend))
    expect(activeLayers(ev.indices, nq, cf)).toBe(nq)
  })

  test('ResidualFSQ: a seed needs no key; bad values are Lefts naming the option', async () => {
    const [, q, shape] = cases[0]!
    const init = q.init(random.keyFromSeed(1))
    const x = randn(shape, 2)
    // typed from ResidualFSQ's apply: these options compile without a cast
    const fsq = orThrow(residualFSQ({ levels: [5, 4, 3], num_quantizers: 3, dim: 5, quantize_dropout: true }))
    expect(E.isRight(await applyOnHost(fsq, { ...init, x, training: true, options: { randQuantizeDropoutFixedSeed: 5, returnAllCodes: true } }, backend))).toBe(true)
    const noKey = await applyOnHost(q, { ...init, x, training: true } as never, backend)
    expect(E.isLeft(noKey) && noKey.left.message).toMatch(/opts\.key\) or randQuantizeDropoutFixedSeed/)
    for (const [opt, v] of [['randQuantizeDropoutFixedSeed', 1.5], ['returnAllCodes', 1]] as const) {
      const bad = await applyOnHost(q, { ...init, x, training: true, options: { [opt]: v } } as never, backend)
      expect(E.isLeft(bad) && bad.left.where, opt).toBe(`ResidualFSQ.${opt}`)
    }
  })

  test.each([
    ['GroupedResidualFSQ', orThrow(groupedResidualFSQ({ dim: 6, groups: 2, levels: [5, 4, 3], num_quantizers: 2, quantize_dropout: true }))],
    ['GroupedResidualLFQ', orThrow(groupedResidualLFQ({ dim: 8, groups: 2, codebook_size: 16, num_quantizers: 2, quantize_dropout: true }))],
  ] as const)('%s: returnAllCodes stacks the groups\' per-layer codes (groups, q, b, n, d); a dropout seed is refused by name, as the reference\'s grouped forward takes none', async (name, q) => {
    const init = q.init(random.keyFromSeed(1))
    const x = randn([2, 5, name === 'GroupedResidualFSQ' ? 6 : 8], 2)
    const key = tensorOf([3, 4], [2], 'int32')
    const r = orThrow(await applyOnHost(q, { ...init, x, training: true, key, options: { returnAllCodes: true } }, backend))
    const all = r.extra['all_codes']!
    const want = orThrow(await runOnHost(backend, [init.params, r.state, r.indices] as const, (p, s, i) => q.codesFromIndices(p as never, i as Tensor, s as never)))
    expect(all.shape).toEqual(want.shape)
    expect(all.shape.slice(0, 2)).toEqual([2, 2])
    // stacked in place of the groups' own, not beside them
    expect(Object.keys(r.extra).filter((k) => k.endsWith('all_codes'))).toEqual(['all_codes'])
    expect(arr(all)).toEqual(arr(want))
    const seeded = await applyOnHost(q, { ...init, x, training: true, key, options: { randQuantizeDropoutFixedSeed: 1 } } as never, backend)
    expect(E.isLeft(seeded) && seeded.left.where).toBe(`${name}.randQuantizeDropoutFixedSeed`)
  })
})
