import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { localCollectives, random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { applyOnHost } from '../src/run.js'
import type { HostApplyResult } from '../src/run.js'
import { applyOnRank } from '../src/distributed.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { arraysOf, orThrow, plainValues } from './helpers.js'
import { expectAgreeAll } from './host-compare.js'
import { describeLanes } from './lanes.js'
import { keyFor, nodeLanes, xFor, zoo } from './zoo.js'

/**
 * applyOnHost's and applyOnRank's `extra`: the extra entries to return. Every other output must be
 * the full call's, bit for bit, and the entries kept must be the full call's too.
 */

/** Every array of a result but its extra entries, by path. */
const allButExtra = (r: HostApplyResult): Record<string, HostTensor> => Object.fromEntries(Object.entries(arraysOf(r)).filter(([path]) => !path.startsWith('extra.')))

describeLanes('extra-select', nodeLanes, (lane) => `applyOnHost extra: ${lane.name}`, (backend) => {
  for (const e of zoo)
    for (const training of [false, true])
      it(`${e.name} ${training ? 'training' : 'eval'}: no extra, or one entry, and every other output as the full call's`, async () => {
        const init = e.q.init(random.keyFromSeed(3))
        const args = { params: init.params, state: init.state, x: xFor(e), key: keyFor(5), training, nonFinite: 'propagate' as const }
        const full = orThrow(await applyOnHost(e.q, args, backend))
        const none = orThrow(await applyOnHost(e.q, { ...args, extra: [] }, backend))
        // two programs on one backend: gpu.js may compile them into different kernels, so floats
        // agree within its program tolerance (exactly elsewhere), integers exactly
        const caps = backend.caps
        expect(none.extra).toEqual({})
        expectAgreeAll(allButExtra(none), allButExtra(full), caps, 'extra: []')
        const names = Object.keys(full.extra)
        const last = names[names.length - 1]
        if (last === undefined) return
        const one = orThrow(await applyOnHost(e.q, { ...args, extra: [last] }, backend))
        expect(Object.keys(one.extra)).toEqual([last])
        expectAgreeAll(one.extra, { [last]: full.extra[last]! }, caps, `extra: [${last}]`)
        expectAgreeAll(allButExtra(one), allButExtra(full), caps, `extra: [${last}]`)
      })
})

describe('applyOnHost extra: a VectorQuantize training loop without distances', () => {
  const q = orThrow(vectorQuantize({ dim: 8, codebook_size: 64, decay: 0.8, kmeans_init: false }))
  const x = tensorOf(random.normalHost(random.keyFromSeed(4), 3 * 40 * 8), [3, 40, 8])
  it('on the fast backend, steps with extra: [] and into end in the reference\'s state after full calls', async () => {
    const init = q.init(random.keyFromSeed(1))
    const ref = cpuBackend()
    const fast = fastBackend({ threads: 1 })
    let want = init.state
    for (let i = 0; i < 3; i++) want = orThrow(await applyOnHost(q, { params: init.params, state: want, x, training: true, key: keyFor(i) }, ref)).state
    let state = init.state
    let spare: HostApplyResult | undefined, last: HostApplyResult | undefined
    for (let i = 0; i < 3; i++) {
      const r = orThrow(await applyOnHost(q, { params: init.params, state, x, training: true, key: keyFor(i), extra: [], ...(spare ? { into: spare } : {}) }, fast))
      expect(r.extra).toEqual({})
      spare = last
      last = r
      state = r.state
    }
    expect(plainValues(state)).toEqual(plainValues(want))
    await fast.dispose?.()
  })
})

describe('applyOnHost and applyOnRank extra: errors name the argument', () => {
  const q = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, kmeans_init: false }))
  const init = q.init(random.keyFromSeed(1))
  const x = tensorOf(random.normalHost(random.keyFromSeed(2), 2 * 3 * 4), [2, 3, 4])
  const backend = cpuBackend()
  const left = async (extra: unknown) => {
    const r = await applyOnHost(q, { ...init, x, extra: extra as string[] }, backend)
    if (E.isRight(r)) throw new Error(`extra ${JSON.stringify(extra)} was accepted`)
    return r.left.message
  }
  it('not an array of names', async () => {
    expect(await left('codebook_dist')).toMatch(/extra must be an array of the names of extra entries to return .*got "codebook_dist"/)
    expect(await left([3])).toMatch(/extra must be an array of the names/)
  })
  it('a name twice', async () => {
    expect(await left(['projected', 'projected'])).toMatch(/extra names "projected" twice/)
  })
  it('a name the call does not return, with the entries it does', async () => {
    expect(await left(['codebook_distance'])).toMatch(/extra names "codebook_distance", which this call does not return \(its extra entries: codebook_dist, codebook_input, projected\)/)
  })
  it('applyOnRank: the same checks, and the entries kept', async () => {
    const comm = localCollectives(1)[0]!
    const bad = await applyOnRank(q, { ...init, x, extra: ['nope'] }, backend, comm)
    expect(E.isLeft(bad) && bad.left.message).toMatch(/extra names "nope", which this call does not return/)
    const notArray = await applyOnRank(q, { ...init, x, extra: 'projected' as never }, backend, comm)
    expect(E.isLeft(notArray) && notArray.left.message).toMatch(/extra must be an array/)
    const full = orThrow(await applyOnRank(q, { ...init, x }, backend, comm))
    const kept = orThrow(await applyOnRank(q, { ...init, x, extra: ['codebook_input'] }, backend, comm))
    expect(Object.keys(kept.extra)).toEqual(['codebook_input'])
    expect(plainValues(kept.extra)).toEqual(plainValues({ codebook_input: full.extra['codebook_input']! }))
    expect(plainValues({ q: kept.quantized, i: kept.indices })).toEqual(plainValues({ q: full.quantized, i: full.indices }))
  })
})
