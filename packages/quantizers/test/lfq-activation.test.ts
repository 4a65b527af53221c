import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { random, valueAndGrad } from '@tessera/core'
import { decodeLFQ } from '../src/lfq/config.js'
import { lfq, makeLFQ } from '../src/lfq/lfq.js'
import { residualLFQ } from '../src/residual/residual-lfq.js'
import type { Named } from '../src/quantizer.js'
import { applyOnHost } from '../src/run.js'
import { applyQ, arr, backends, expectClose, orThrow, randn, runOnHost } from './helpers.js'

/** Each activation with its derivative on the host. */
const activations = [
  ['tanh', 'tanh', (v: number) => 1 - Math.tanh(v) ** 2],
  ['sigmoid', 'sigmoid', (v: number) => { const s = 1 / (1 + Math.exp(-v)); return s * (1 - s) }],
  ['a user function 3x', (x: Tensor) => x.mul(3), () => 3],
] as const

describe.each(backends.map((b) => [b.name, b] as const))('LFQ straight_through_activation on %s', (_name, backend) => {
  test.prop([fc.constantFrom(...activations), fc.integer({ min: 1, max: 4 }), fc.nat(1000)], { numRuns: 20 })(
    'changes only the training gradient: outputs equal the identity\'s (up to the rounding of act(x) + (q - act(x))), d quantized / dx is the activation\'s derivative',
    async ([, act, deriv], d, seed) => {
      const plain = makeLFQ(orThrow(decodeLFQ({ dim: d })))
      const q = makeLFQ(orThrow(decodeLFQ({ dim: d, straight_through_activation: act })))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 3, d], seed)
      for (const training of [false, true]) {
        const a = await applyQ(backend, plain, init, x, { training })
        const b = await applyQ(backend, q, init, x, { training })
        // act(x) + (q - act(x)) is q up to float32 rounding (in torch too); exact in eval
        if (training) expectClose(b.quantized, a.quantized, 1e-6)
        else expect(arr(b.quantized)).toEqual(arr(a.quantized))
        expect(arr(b.indices)).toEqual(arr(a.indices))
        expect(arr(b.loss)).toEqual(arr(a.loss))
      }
      const g = orThrow(await runOnHost(backend, [init.params, init.state, x] as const, (p, s, xs) =>
        valueAndGrad((xx: Tensor, pp: Named<Tensor>, ss: Named<Tensor>) => q.apply(pp, ss, xx, { training: true }).quantized.sum())(xs as Tensor, p as Named<Tensor>, s as Named<Tensor>)))
      arr(g.grad as never).forEach((v, i) => expect(v).toBeCloseTo(deriv(x.data[i]!), 5))
    },
  )

  test('ResidualLFQ passes it to every layer; a function that changes the shape is a Left naming the option', async () => {
    const r = residualLFQ({ dim: 4, codebook_size: 16, num_quantizers: 2, straight_through_activation: 'tanh' })
    expect(E.isRight(r)).toBe(true)
    const bad = orThrow(lfq({ dim: 4, straight_through_activation: (x: Tensor) => x.sum(-1) }))
    const init = bad.init(random.keyFromSeed(0))
    const res = await applyOnHost(bad, { ...init, x: randn([1, 2, 4], 0), training: true }, backend)
    expect(E.isLeft(res) && [res.left.kind, res.left.where]).toEqual(['shape', 'LFQ.straight_through_activation'])
  })
})

describe('LFQ straight_through_activation config', () => {
  test.each([['bogus'], [3], [{}], [true]])('%j is a config Left naming the field', (v) => {
    const r = decodeLFQ({ dim: 4, straight_through_activation: v })
    expect(E.isLeft(r) && [r.left.kind, r.left.where]).toEqual(['config', 'LFQ.straight_through_activation'])
  })
  test('defaults to null (the identity)', () => {
    expect(orThrow(decodeLFQ({ dim: 4 })).straight_through_activation).toBe(null)
  })
})
