import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Tensor } from '@tessera/core'
import { linear, random, scoped } from '@tessera/core'
import { fsq } from '../src/fsq/fsq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import type { Named } from '../src/quantizer.js'
import { fnStage, linearStage, sequential } from '../src/sequential/sequential.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn, runOnHost } from './helpers.js'

describe('Sequential', () => {
  test('needs exactly one quantizer (a config Left naming fns)', () => {
    const f = orThrow(fsq({ levels: [5, 5] }))
    for (const parts of [[linearStage(2, 2)], [f, linearStage(2, 2), f]]) {
      const r = sequential(parts)
      expect(E.isLeft(r) && [r.left.kind, r.left.where]).toEqual(['config', 'Sequential.fns'])
    }
  })

  test('names nest under fns.{i}. as the reference ModuleList does', () => {
    const s = orThrow(sequential([linearStage(6, 4), orThrow(fsq({ levels: [8, 5, 5, 5] })), fnStage('tanh', (x) => x.tanh()), linearStage(4, 6, false)]))
    expect(Object.keys(s.paramSpecs).sort()).toEqual(['fns.0.bias', 'fns.0.weight', 'fns.3.weight'])
    expect(Object.keys(s.stateSpecs).sort()).toEqual(['fns.1._basis', 'fns.1._levels', 'fns.1.implicit_codebook'])
    const init = s.init(random.keyFromSeed(0))
    expect(Object.keys(init.params).sort()).toEqual(Object.keys(s.paramSpecs).sort())
    expect(Object.keys(init.state).sort()).toEqual(Object.keys(s.stateSpecs).sort())
  })
})

describe.each(backends.map((b) => [b.name, b] as const))('Sequential on %s', (_name, backend) => {
  test.prop([fc.nat(1000), fc.boolean()], { numRuns: 15 })(
    'is the composition of its parts: stages map, the quantizer gives indices, losses and state; indicesToCodes reproduces the output in eval',
    async (seed, training) => {
      const vq = orThrow(vectorQuantize({ dim: 4, codebook_size: 8 }))
      const s = orThrow(sequential([linearStage(6, 4), vq, fnStage('double', (x) => x.mul(2)), linearStage(4, 5)]))
      const init = s.init(random.keyFromSeed(seed))
      const x = randn([2, 7, 6], seed)
      const r = await applyQ(backend, s, init, x, { training })
      const want = orThrow(
        await runOnHost(backend, [init.params, init.state, x] as const, (p, st, xs) => {
          const P = p as Named<Tensor>
          const h = linear(xs as Tensor, { weight: P['fns.0.weight']!, bias: P['fns.0.bias'] })
          const q = vq.apply(scoped(P, 'fns.1.'), scoped(st as Named<Tensor>, 'fns.1.'), h, { training })
          const out = linear(q.quantized.mul(2), { weight: P['fns.3.weight']!, bias: P['fns.3.bias'] })
          return { out, h, indices: q.indices, loss: q.loss, embed: q.state['_codebook.embed_avg']! }
        }),
      )
      expect(arr(r.quantized)).toEqual(arr(want.out))
      expect(arr(r.indices)).toEqual(arr(want.indices))
      expect(arr(r.loss)).toEqual(arr(want.loss))
      expect(arr(r.extra['fns.0.output']!)).toEqual(arr(want.h))
      expect(arr(r.state['fns.1._codebook.embed_avg']!)).toEqual(arr(want.embed))
      expect(r.extra['fns.1.output']!.shape).toEqual([2, 7, 4])
      if (!training) expectClose(await decodeQ(backend, s, init, r.indices), r.quantized, 1e-5)
    },
  )
})
