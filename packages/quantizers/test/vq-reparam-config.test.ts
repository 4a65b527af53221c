import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Tensor, TesseraError } from '@tessera/core'
import { random } from '@tessera/core'
import { sgd } from '../../nn/src/optim.js'
import { linearStage } from '../src/sequential/sequential.js'
import type { VectorQuantize } from '../src/vq/vector-quantize.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { vqReparamProps } from '../src/vq/reparam-config.js'
import { arr, orThrow, randn } from './helpers.js'
import { reference, vqRun } from './vq-reparam-helpers.js'

/**
 * Config fuzzing of VectorQuantize's reparametrisation options: mostly valid values, sometimes a
 * wrong one; every config either builds and runs (eval and a training step, the state keeping its
 * keys) or is a config Left naming a VectorQuantize field, and a wrongly typed value of each new
 * field is refused at that field.
 */

const rarely = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<unknown>) => fc.oneof({ weight: 8, arbitrary: good as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: bad })
const opt = orThrow(sgd({ lr: 0.1 }))
const decay = rarely(fc.constantFrom(0, 0.5, 0.99, 1), fc.constantFrom(-0.1, 1.5, NaN, 'x'))

/** A base that is valid on its own (EMA, learnable, DiVeQ, bridge), so the fuzzed fields decide validity. */
const modes = fc.constantFrom<Record<string, unknown>>(
  {},
  { learnable_codebook: true, ema_update: false },
  { directional_reparam: true, threshold_ema_dead_code: 2 },
  { learnable_codebook: true, ema_update: false, threshold_ema_dead_code: 1 },
)
const fuzzed = fc.record(
  {
    heads: fc.constantFrom(1, 2),
    separate_codebook_per_head: fc.boolean(),
    rotation_trick: rarely(fc.constant(false), fc.constant(true)),
    use_cosine_sim: rarely(fc.constant(false), fc.constant(true)),
    affine_param: fc.boolean(),
    sync_affine_param: rarely(fc.boolean(), fc.constantFrom(1, 'yes')),
    affine_param_batch_decay: decay,
    affine_param_codebook_decay: decay,
    directional_reparam_variance: rarely(fc.constantFrom(0, 5e-3, 0.5), fc.constantFrom(-1, Infinity)),
    sync_update_v: rarely(fc.constantFrom(0, 0.5, 1), fc.constantFrom(-0.5, 2)),
    vq_bridge: rarely(fc.constantFrom<unknown>(null, (e: Tensor) => e.tanh(), linearStage(2, 2, false)), fc.constantFrom<unknown>('mlp', 3, {})),
    in_place_codebook_optimizer: rarely(fc.constantFrom<unknown>(null, opt), fc.constantFrom<unknown>('sgd', { lr: 1 })),
    manual_in_place_optimizer_update: rarely(fc.boolean(), fc.constant(2)),
  },
  { requiredKeys: [] },
)
const options = fc
  .tuple(fc.constantFrom(2, 3, 4), fc.integer({ min: 1, max: 6 }), modes, fuzzed)
  .map(([dim, codebook_size, mode, f]) => ({ dim, codebook_size, ...mode, ...f }) as Record<string, unknown> & { dim: number })

let valid = 0

describe('VectorQuantize reparametrisation config fuzz', () => {
  test.prop([options, fc.nat(1000)], { numRuns: 100 })('every config builds and runs, or is a config Left naming a VectorQuantize field', async (o, seed) => {
    // a Linear bridge is 2 -> 2: it fits a codebook dim (dim here) of 2 only
    const bridgeFits = !(typeof o['vq_bridge'] === 'object' && o['vq_bridge'] !== null && 'paramSpecs' in (o['vq_bridge'] as object)) || o.dim === 2
    const built: E.Either<TesseraError, VectorQuantize> = vectorQuantize(o)
    if (E.isLeft(built)) {
      expect(built.left.kind).toBe('config')
      expect(built.left.where.startsWith('VectorQuantize.')).toBe(true)
      return
    }
    if (!bridgeFits) return
    valid++
    const q = built.right
    const init = q.init(random.keyFromSeed(seed))
    const x = randn([1, 3, o.dim], seed)
    for (const training of [false, true]) {
      const r = await vqRun(reference, q, init, x, { training, key: [seed, 1] })
      expect(arr(r.quantized).every(Number.isFinite)).toBe(true)
      expect(Object.keys(r.state).sort()).toEqual(Object.keys(init.state).sort())
      for (const [k, v] of Object.entries(r.updatedParams)) expect(v.shape, k).toEqual(init.params[k]!.shape)
    }
  })

  it('the fuzz met enough valid configs', () => expect(valid).toBeGreaterThanOrEqual(10))

  it.each(Object.keys(vqReparamProps))('%s: a value of the wrong kind is a Left at that field', (field) => {
    for (const bad of ['x', [], { a: 1 }]) {
      const r = vectorQuantize({ dim: 4, codebook_size: 8, [field]: bad })
      if (E.isRight(r)) throw new Error(`${field}: ${JSON.stringify(bad)} was accepted`)
      expect(r.left.where).toBe(`VectorQuantize.${field}`)
    }
  })
})
