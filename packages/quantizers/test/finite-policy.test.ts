import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { applyOnHost } from '../src/run.js'
import { keyFor, nodeLanes, snapshot, xFor, zoo } from './zoo.js'

/**
 * Issue 15, item 1: the finite-input policy of training calls, on every backend available in Node.
 * One NaN in a VQ training batch used to turn the codebook's EMA statistics into NaN with no error.
 */

const withValue = (x: HostTensor, flat: number, v: number): HostTensor => {
  const d = x.data.slice() as Float32Array
  d[flat] = v
  return tensorOf(d, x.shape)
}
const vq = zoo.find((z) => z.name === 'VectorQuantize')!
const rvq = zoo.find((z) => z.name === 'ResidualVQ')!

for (const lane of nodeLanes) {
  describe(`finite-input policy: ${lane.name}`, async () => {
    const made = await lane.make()
    if ('skip' in made) {
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      return
    }
    const backend = made

    it("default 'error': a NaN in a training batch is a Left naming x and its first bad position, state untouched", async () => {
      const init = vq.q.init(random.keyFromSeed(1))
      const before = snapshot(init.state)
      // x is (2, 3, 4): flat 13 is [1,0,1]; a later Inf must not be the one reported
      const x = withValue(withValue(xFor(vq), 13, NaN), 20, Infinity)
      const r = await applyOnHost(vq.q, { ...init, x, training: true }, backend)
      if (E.isRight(r)) throw new Error('expected a Left')
      expect(r.left.kind).toBe('input')
      expect(r.left.where).toBe('VectorQuantize.apply')
      expect(r.left.message).toContain('x is not finite at position [1,0,1] (flat 13): NaN')
      expect(snapshot(init.state)).toEqual(before)
    })

    it("'skip-update' returns the outputs and the state passed in, and says what was found", async () => {
      const init = vq.q.init(random.keyFromSeed(1))
      const x = withValue(xFor(vq), 5, -Infinity)
      const r = await applyOnHost(vq.q, { ...init, x, training: true, nonFinite: 'skip-update' }, backend)
      if (E.isLeft(r)) throw r.left
      expect(r.right.nonFinite).toContain('position [0,1,1] (flat 5): -Infinity')
      expect(snapshot(r.right.state)).toEqual(snapshot(init.state))
      // a finite batch still updates the statistics under skip-update
      const ok = await applyOnHost(vq.q, { ...init, x: xFor(vq), training: true, nonFinite: 'skip-update' }, backend)
      if (E.isLeft(ok)) throw ok.left
      expect(ok.right.nonFinite).toBeUndefined()
      expect(snapshot(ok.right.state)).not.toEqual(snapshot(init.state))
    })

    it("'propagate' lets the NaN into the statistics (the old behaviour, on request only)", async () => {
      const init = vq.q.init(random.keyFromSeed(1))
      const r = await applyOnHost(vq.q, { ...init, x: withValue(xFor(vq), 0, NaN), training: true, nonFinite: 'propagate' }, backend)
      if (E.isLeft(r)) throw r.left
      expect(Array.from(r.right.state['_codebook.embed_avg']!.data).some(Number.isNaN)).toBe(true)
    })

    it('a finite input whose statistics overflow float32 is a Left naming the statistic', async () => {
      const init = rvq.q.init(random.keyFromSeed(1))
      const x = tensorOf(xFor(rvq).data.map((v) => v * 1e30), rvq.xShape)
      const r = await applyOnHost(rvq.q, { ...init, x, training: true }, backend)
      if (E.isRight(r)) throw new Error('expected a Left')
      expect(r.left.kind).toBe('input')
      expect(r.left.message).toMatch(/the input is finite but the computed (state entry|loss)/)
    })

    it('eval calls propagate by default (no state changes in eval), and check when asked', async () => {
      const init = rvq.q.init(random.keyFromSeed(1))
      const x = withValue(xFor(rvq), 2, NaN)
      expect(E.isRight(await applyOnHost(rvq.q, { ...init, x }, backend))).toBe(true)
      const asked = await applyOnHost(rvq.q, { ...init, x, nonFinite: 'error' }, backend)
      expect(E.isLeft(asked) && asked.left.message).toContain('position [0,0,2]')
    })

    for (const e of zoo)
      it(`${e.name}: a NaN in training is a Left by default`, async () => {
        const init = e.q.init(random.keyFromSeed(2))
        const r = await applyOnHost(e.q, { ...init, x: withValue(xFor(e), 1, NaN), key: keyFor(3), training: true }, backend)
        expect(E.isLeft(r) && r.left.message).toContain('x is not finite at position')
      })
  })
}
