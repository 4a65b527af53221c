import { afterAll, describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor, TesseraError } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { fsq } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { latentQuantize } from '../src/latent/latent.js'
import { fsp } from '../src/fsp/fsp.js'
import { binaryMapper } from '../src/binary/binary-mapper.js'
import { simVQ } from '../src/simvq/simvq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { residualLFQ } from '../src/residual/residual-lfq.js'
import { groupedResidualFSQ, groupedResidualLFQ } from '../src/grouped/grouped-residual.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { hierarchicalVQ } from '../src/hierarchical/hierarchical-vq.js'
import type { Quantizer } from '../src/quantizer.js'
import { applyOnHost } from '../src/run.js'
import { backends, randn } from './helpers.js'

/** Mostly plausible values, sometimes wrong ones (bad sign, fractional, wrong type, null). */
const junk = fc.constantFrom<unknown>(-1, 0, 2.5, 'x', null, true, [], {})
const mostly = <T>(a: fc.Arbitrary<T>) => fc.oneof({ weight: 40, arbitrary: a as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: junk })
const small = fc.integer({ min: 1, max: 6 })
/** mostly valid choices, with a rare invalid one so both branches are exercised */
const rarely = <T>(good: fc.Arbitrary<T>, bad: fc.Arbitrary<T>) => fc.oneof({ weight: 8, arbitrary: good }, { weight: 1, arbitrary: bad })
const levels = rarely(fc.array(rarely(fc.integer({ min: 3, max: 6 }), fc.constantFrom(1, 2)), { minLength: 1, maxLength: 3 }), fc.constant([] as number[]))
const pow2ish = rarely(fc.constantFrom(2, 4, 8, 16), fc.constantFrom(1, 3, 12))
const frac = rarely(fc.constantFrom(0.3, 0.5, 1), fc.constantFrom(0, 1.5))
const mostlyTrue = rarely(fc.constant(true), fc.constant(false))
const mostlyFalse = rarely(fc.constant(false), fc.constant(true))
const groupedDim = fc.constantFrom(2, 3, 4, 6, 12)

/** Required keys are always there (mostly valid); each optional key is present half the time; rarely an unknown key. */
function options(required: Record<string, fc.Arbitrary<unknown>>, optional: Record<string, fc.Arbitrary<unknown>>) {
  const req = fc.record(Object.fromEntries(Object.entries(required).map(([k, a]) => [k, mostly(a)])))
  const opt = fc.record(Object.fromEntries(Object.entries(optional).map(([k, a]) => [k, fc.option(mostly(a), { nil: undefined, freq: 2 })])))
  return fc.tuple(req, opt, fc.oneof({ weight: 12, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('bogus', 'levles') })).map(([r, o, extra]) => {
    const clean = { ...r, ...Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) }
    return extra ? { ...clean, [extra]: 1 } : clean
  })
}

/** How many sampled configs of each family were valid (a fuzz that only sees Lefts proves nothing). */
const validCount = new Map<string, number>()

interface Family {
  readonly name: string
  readonly build: (o: unknown) => E.Either<TesseraError, Quantizer>
  readonly options: fc.Arbitrary<Record<string, unknown>>
  /** an input the built quantizer accepts */
  readonly input: (q: Quantizer) => number[]
  /** the shape of `quantized` for input shape `x`, where it is not x's own (BinaryMapper's one-hot) */
  readonly output?: (q: Quantizer, x: readonly number[]) => readonly number[]
}

const cfgOf = (q: Quantizer) => q.config as Record<string, unknown>
const families: Family[] = [
  {
    name: 'FSQ',
    build: fsq,
    options: options({ levels }, { dim: small, num_codebooks: fc.integer({ min: 1, max: 2 }), keep_num_codebooks_dim: mostlyTrue, preserve_symmetry: mostlyTrue, noise_dropout: rarely(fc.constantFrom(0, 0.3), fc.constant(1.5)), bound_hard_clamp: fc.boolean(), orthogonal_rotation: fc.boolean(), channel_first: fc.boolean(), projection_has_bias: fc.boolean() }),
    input: (q) => (cfgOf(q)['channel_first'] ? [1, cfgOf(q)['dim'] as number, 4] : [1, 4, cfgOf(q)['dim'] as number]),
  },
  {
    name: 'LFQ',
    build: lfq,
    options: options({ codebook_size: pow2ish }, { dim: small, num_codebooks: fc.integer({ min: 1, max: 2 }), entropy_loss_weight: fc.double({ min: 0, max: 1, noNaN: true }), commitment_loss_weight: fc.double({ min: 0, max: 1, noNaN: true }), diversity_gamma: fc.double({ min: 0, max: 2, noNaN: true }), codebook_scale: fc.constantFrom(0.5, 1, 2), frac_per_sample_entropy: frac, spherical: fc.boolean(), has_projections: mostlyTrue, soft_clamp_input_value: rarely(fc.constantFrom(2, 3), fc.constant(0.5)), cosine_sim_project_in: fc.boolean(), experimental_softplus_entropy_loss: fc.boolean(), orthogonal_rotation: fc.boolean(), inv_temperature: fc.constantFrom(1, 100), straight_through_activation: rarely(fc.constantFrom<unknown>(null, 'identity', 'tanh', 'sigmoid', 'relu', (x: Tensor) => x.mul(2)), fc.constantFrom<unknown>('bogus', 3)) }),
    input: (q) => [1, 4, cfgOf(q)['dim'] as number],
  },
  {
    name: 'ResidualFSQ',
    build: residualFSQ,
    options: options({ levels, num_quantizers: fc.integer({ min: 1, max: 3 }) }, { dim: small, quantize_dropout: fc.boolean(), quantize_dropout_cutoff_index: fc.integer({ min: 0, max: 2 }), quantize_dropout_multiple_of: fc.integer({ min: 1, max: 2 }), bound_hard_clamp: mostlyTrue, soft_clamp_input_value: rarely(fc.constant(undefined), fc.constantFrom(1, 2)), is_channel_first: fc.boolean() }),
    input: (q) => (cfgOf(q)['is_channel_first'] ? [1, cfgOf(q)['dim'] as number, 4] : [1, 4, cfgOf(q)['dim'] as number]),
  },
  {
    name: 'ResidualLFQ',
    build: residualLFQ,
    options: options({ dim: small, num_quantizers: fc.integer({ min: 1, max: 3 }), codebook_size: pow2ish }, { quantize_dropout: fc.boolean(), soft_clamp_input_value: fc.constantFrom(1, 2, 4), commitment_loss_weight: fc.constantFrom(0, 0.25), frac_per_sample_entropy: frac }),
    input: (q) => [1, 4, cfgOf(q)['dim'] as number],
  },
  {
    name: 'ResidualVQ',
    build: residualVQ,
    // beam search and QINCo options, with the layer options they interact with
    options: options({ dim: small, codebook_size: fc.integer({ min: 2, max: 6 }), num_quantizers: fc.integer({ min: 1, max: 3 }) }, { beam_size: rarely(fc.constantFrom(null, 1, 2), fc.constantFrom(0, 7, 1.5)), eval_beam_size: rarely(fc.constantFrom(null, 1, 2), fc.constantFrom(0, 9)), beam_score_quantizer_weights: rarely(fc.constantFrom<unknown>(null, [1], [1, 0.5, 2]), fc.constantFrom<unknown>([1, 1, 1, 1], [NaN], 'x')), implicit_neural_codebook: fc.boolean(), mlp_kwargs: rarely(fc.constantFrom<unknown>({}, { depth: 1 }, { dim_hidden: 3, depth: 2 }), fc.constantFrom<unknown>({ depth: -1 }, { width: 2 }, 'x')), quantize_dropout: fc.boolean(), shared_codebook: mostlyFalse, use_cosine_sim: mostlyFalse, commitment_weight: rarely(fc.constantFrom(1, 0.5), fc.constant(0)) }),
    input: (q) => [1, 4, cfgOf(q)['dim'] as number],
  },
  {
    name: 'GroupedResidualFSQ',
    build: groupedResidualFSQ,
    options: options({ dim: groupedDim, levels, num_quantizers: fc.integer({ min: 1, max: 2 }) }, { groups: fc.integer({ min: 1, max: 3 }), accept_image_fmap: mostlyFalse, is_channel_first: fc.boolean() }),
    input: (q) => (cfgOf(q)['accept_image_fmap'] ? [1, cfgOf(q)['dim'] as number, 4] : [1, 4, cfgOf(q)['dim'] as number]),
  },
  {
    name: 'GroupedResidualLFQ',
    build: groupedResidualLFQ,
    options: options({ dim: groupedDim, codebook_size: pow2ish, num_quantizers: fc.integer({ min: 1, max: 2 }) }, { groups: fc.integer({ min: 1, max: 3 }), accept_image_fmap: mostlyFalse }),
    input: (q) => [1, 4, cfgOf(q)['dim'] as number],
  },
  {
    name: 'FSP',
    build: fsp,
    options: options({ levels }, { dim: small, channel_first: fc.boolean(), projection_has_bias: fc.boolean(), act_name: rarely(fc.constantFrom('tanh', 'sigmoid', 'normal', 'laplace', 'cauchy'), fc.constantFrom('relu', 'gelu')), quantize_rate: rarely(fc.constantFrom(0, 0.5, 1), fc.constantFrom(-0.1, 1.5)), need_inv_act: fc.boolean(), vector_norm: rarely(fc.constantFrom('none', 'var', 'kurt', 'var_tanh', 'var_sigmoid', 'var_laplace'), fc.constantFrom('bogus', 'toString')) }),
    input: (q) => (cfgOf(q)['channel_first'] ? [1, cfgOf(q)['dim'] as number, 4] : [1, 4, cfgOf(q)['dim'] as number]),
  },
  {
    name: 'VectorQuantize',
    build: vectorQuantize,
    // the forward options that are constructor options (cross-entropy commitment, masked padding, LayerNorm after project_in) with the layouts they meet
    options: options({ dim: small, codebook_size: fc.integer({ min: 1, max: 8 }) }, { codebook_dim: fc.integer({ min: 1, max: 4 }), heads: fc.constantFrom(1, 2), separate_codebook_per_head: fc.boolean(), use_cosine_sim: mostlyFalse, commitment_weight: fc.constantFrom(0, 1), commitment_use_cross_entropy_loss: fc.boolean(), return_zeros_for_masked_padding: fc.boolean(), layernorm_after_project_in: fc.boolean(), sync_codebook: fc.constantFrom(null, true, false), sync_kmeans: fc.boolean() }),
    input: (q) => [1, 4, cfgOf(q)['dim'] as number],
  },
  {
    name: 'SimVQ',
    build: simVQ,
    // frozen_codebook_dim is left out: the sampled transform keeps the width, so it must equal dim
    options: options({ dim: small, codebook_size: fc.integer({ min: 1, max: 8 }) }, { rotation_trick: fc.boolean(), commitment_weight: fc.constantFrom(0, 1), input_to_quantize_commit_loss_weight: fc.constantFrom(0, 0.25), channel_first: fc.boolean(), codebook_transform: rarely(fc.constantFrom<unknown>(null, (c: Tensor) => c.tanh()), fc.constantFrom<unknown>(3, 'linear')), init_fn: rarely(fc.constantFrom<unknown>(null, (c: HostTensor) => c), fc.constantFrom<unknown>('uniform', 2)) }),
    input: (q) => (cfgOf(q)['channel_first'] ? [1, cfgOf(q)['dim'] as number, 4] : [1, 4, cfgOf(q)['dim'] as number]),
  },
  {
    name: 'BinaryMapper',
    build: binaryMapper,
    options: options({}, { bits: rarely(fc.integer({ min: 1, max: 5 }), fc.constantFrom(0, 21)), kl_loss_threshold: fc.constantFrom(0, 0.5, Math.LN2), deterministic_on_eval: fc.boolean(), temperature: rarely(fc.constantFrom(0.5, 1, 2), fc.constantFrom(0, -1)), straight_through: fc.constantFrom(null, true, false), calc_aux_loss: fc.constantFrom(null, true, false), deterministic: fc.constantFrom(null, true, false) }),
    input: (q) => [1, 4, cfgOf(q)['bits'] as number],
    output: (q, x) => [...x.slice(0, -1), 2 ** (cfgOf(q)['bits'] as number)],
  },
  {
    name: 'LatentQuantize',
    build: latentQuantize,
    options: options({ levels: rarely(levels, fc.integer({ min: 2, max: 5 }) as fc.Arbitrary<unknown> as fc.Arbitrary<number[]>), dim: small }, { num_codebooks: fc.integer({ min: 1, max: 2 }), codebook_dim: rarely(fc.constant(-1), fc.integer({ min: 0, max: 3 })), optimize_values: fc.boolean(), commitment_loss_weight: fc.constantFrom(0, 0.1) }),
    input: (q) => [1, cfgOf(q)['dim'] as number, 4],
  },
  {
    name: 'HierarchicalVQ',
    build: hierarchicalVQ,
    options: options(
      {
        dim: small,
        codebook_size: fc.integer({ min: 1, max: 8 }),
        scales: rarely(fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 3 }).map((a) => [...a].sort((x, y) => x - y)), fc.constantFrom<number[]>([], [3, 1], [2, 0])),
        accept_image_fmap: mostlyTrue,
      },
      { quant_resi: rarely(fc.constantFrom(0, 0.5, -0.3, 1), fc.constant(NaN)), share_quant_resi: rarely(fc.integer({ min: -1, max: 3 }), fc.constant(1.5)), kmeans_init: fc.boolean(), kmeans_iters: fc.integer({ min: 0, max: 3 }), threshold_ema_dead_code: fc.constantFrom(0, 2), decay: rarely(fc.constantFrom(0.8, 0.99), fc.constant(1.5)), commitment_weight: fc.constantFrom(0, 1), rotation_trick: fc.boolean(), stochastic_sample_codes: fc.boolean(), sample_codebook_temp: fc.constantFrom(0, 0.1, 1), orthogonal_reg_weight: fc.constantFrom(0, 0.5), orthogonal_reg_max_codes: rarely(fc.constantFrom(2, 128), fc.constant(0)), orthogonal_reg_active_codes_only: fc.boolean() },
    ),
    input: (q) => [1, cfgOf(q)['dim'] as number, 4, 4],
  },
]

describe.each(backends.map((b) => [b.name, b] as const))('config fuzz on %s', (_name, backend) => {
  describe.each(families.map((f) => [f.name, f] as const))('%s', (name, fam) => {
    test.prop([fam.options, fc.nat(1000)], { numRuns: 60 })('every valid config builds, traces and runs; every invalid one is a config Left naming the field', async (opts, seed) => {
      let built: E.Either<TesseraError, Quantizer>
      try {
        built = fam.build(opts)
      } catch (e) {
        throw new Error(`building ${JSON.stringify(opts)} threw instead of returning a Left: ${(e as Error).message}`)
      }
      if (E.isLeft(built)) {
        expect(built.left.kind).toBe('config')
        expect(built.left.where.startsWith(`${name}.`)).toBe(true)
        expect(built.left.message.length).toBeGreaterThan(5)
        return
      }
      const q = built.right
      validCount.set(name, (validCount.get(name) ?? 0) + 1)
      const init = q.init(random.keyFromSeed(seed))
      const x = randn(fam.input(q), seed)
      for (const training of [false, true]) {
        const r = await applyOnHost(q, { ...init, x, training, key: tensorOf([seed, 1], [2], 'int32') }, backend)
        if (E.isLeft(r)) throw new Error(`${JSON.stringify(opts)} (training ${training}) decoded but did not run: ${r.left.message}`)
        expect(r.right.quantized.shape).toEqual(fam.output ? fam.output(q, x.shape) : x.shape)
        expect(Array.from(r.right.quantized.data).every(Number.isFinite)).toBe(true)
        expect(Number.isFinite(r.right.loss.data[0])).toBe(true)
      }
    })
    afterAll(() => {
      if (process.env["FUZZ_COUNTS"]) console.log(name, validCount.get(name))
      expect(validCount.get(name) ?? 0).toBeGreaterThanOrEqual(10)
    })
  })
})
