import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { applyOnHost } from '../src/run.js'
import { nodeLanes, zoo } from './zoo.js'
import { randn } from './helpers.js'

/**
 * Issue 15, item 6: overflow gives the same answer on every backend that claims strict NaN. Rows
 * scaled from 1 to 3.4e38 (and one holding Infinity) make the distances overflow to +Inf or NaN;
 * indices must equal the reference's exactly, and so must whether the training loss is Inf or NaN.
 * gpu.js (caps.strictNaN false) compares NaN as false in its reductions and in max/min, so it is
 * exempt, as documented in docs/NUMERICS.md.
 */
const scales = [1, 1e18, 1e19, 3e19, 1e20, 1e30, 1e37, 3e38, 3.4e38, Infinity]
function overflowing(d: number): HostTensor {
  const base = randn([1, scales.length, d], 1).data
  return tensorOf(Array.from(base, (v, i) => {
    const s = scales[Math.floor(i / d)]!
    return s === Infinity ? (i % d === 0 ? Infinity : v) : v * s
  }), [1, scales.length, d])
}
const same = (a: number, b: number) => Object.is(a, b) || a === b

describe('overflowing distances agree with the reference on strict-NaN backends', async () => {
  const reference = cpuBackend()
  for (const lane of nodeLanes) {
    const made = await lane.make()
    if ('skip' in made) {
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      continue
    }
    if (!made.caps.strictNaN) {
      it.skip(`${lane.name}: caps.strictNaN is false (documented behaviour, not checked)`, () => {})
      continue
    }
    for (const name of ['VectorQuantize', 'ResidualVQ', 'SimVQ'])
      for (const training of [false, true])
        it(`${lane.name} ${name} ${training ? 'training' : 'eval'}`, async () => {
          const e = zoo.find((z) => z.name === name)!
          const init = e.q.init(random.keyFromSeed(3))
          const x = overflowing(e.xShape.at(-1)!)
          const args = { ...init, x, training, nonFinite: 'propagate' as const }
          const want = await applyOnHost(e.q, args, reference)
          const got = await applyOnHost(e.q, args, made)
          if (E.isLeft(want)) throw want.left
          if (E.isLeft(got)) throw got.left
          expect(Array.from(got.right.indices.data)).toEqual(Array.from(want.right.indices.data))
          const [g, w] = [got.right.loss.data[0]!, want.right.loss.data[0]!]
          expect(same(g, w) || (Number.isFinite(w) && Math.abs(g - w) <= 1e-5 * Math.abs(w)), `loss ${g} vs ${w}`).toBe(true)
        })
  }
})
