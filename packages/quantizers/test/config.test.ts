import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import { decodeFSQ } from '../src/fsq/config.js'
import { decodeLFQ } from '../src/lfq/config.js'
import { decodeResidualFSQ } from '../src/residual/residual-fsq.js'
import { decodeResidualLFQ } from '../src/residual/residual-lfq.js'
import { decodeGroupedResidualFSQ } from '../src/grouped/grouped-residual.js'
import { decodeLatentQuantize } from '../src/latent/latent.js'
import { decodeRVQ } from '../src/residual-vq/config.js'

function leftOf(e: E.Either<{ kind: string; where: string; message: string }, unknown>) {
  if (E.isRight(e)) throw new Error(`expected a Left, got ${JSON.stringify(e.right)}`)
  return e.left
}

describe('config decoding', () => {
  it('FSQ resolves the reference defaults', () => {
    const c = decodeFSQ({ levels: [8, 5, 5, 5] })
    expect(E.isRight(c) && c.right).toMatchObject({ dim: 4, codebook_size: 1000, keep_num_codebooks_dim: false, has_projections: false })
    const p = decodeFSQ({ levels: [8, 5], dim: 16, num_codebooks: 2 })
    expect(E.isRight(p) && p.right).toMatchObject({ has_projections: true, keep_num_codebooks_dim: true })
  })

  it.each([
    [{ levels: [2, 2, 2] }, 'FSQ.levels', /preserve_symmetry/],
    [{ levels: [8, 0] }, 'FSQ.levels[1]', /PositiveInt/],
    [{ levels: [8, 5], dim: -3 }, 'FSQ.dim', /expected/],
    [{ levels: [8, 5], levles: 1 }, 'FSQ.levles', /unknown key "levles"/],
    [{ levels: [] }, 'FSQ.levels', /at least one/],
    [{ levels: [8, 5], num_codebooks: 2, keep_num_codebooks_dim: false }, 'FSQ.keep_num_codebooks_dim', /num_codebooks > 1/],
    [{ levels: [8, 5], noise_dropout: 0.5 }, 'FSQ.noise_dropout', /preserve_symmetry/],
    [{ levels: [8, 5], num_codebooks: 1.5 }, 'FSQ.num_codebooks', /PositiveInt/],
    [{ levels: [4096, 4096, 4096] }, 'FSQ.levels', /2\^24/],
  ])('FSQ rejects %j at %s', (input, where, msg) => {
    const l = leftOf(decodeFSQ(input))
    expect(l.kind).toBe('config')
    expect(l.where).toBe(where)
    expect(l.message).toMatch(msg)
  })

  it.each([
    [{ codebook_size: 12, dim: 4 }, 'LFQ.codebook_size', /power of 2/],
    [{}, 'LFQ.codebook_size', /either dim or codebook_size/],
    [{ codebook_size: 16, dim: 8, has_projections: false }, 'LFQ.dim', /inconsistent/],
    [{ codebook_size: 16, frac_per_sample_entropy: 0 }, 'LFQ.frac_per_sample_entropy', /UnitInterval/],
    [{ codebook_size: 16, soft_clamp_input_value: 0.5 }, 'LFQ.soft_clamp_input_value', /codebook_scale/],
    [{ codebook_size: 16, straight_through_activation: 'bogus' }, 'LFQ.straight_through_activation', /bogus/],
    [{ codebook_size: 1 }, 'LFQ.codebook_size', /at least 2/],
  ])('LFQ rejects %j at %s', (input, where, msg) => {
    const l = leftOf(decodeLFQ(input))
    expect(l.kind).toBe('config')
    expect(l.where).toBe(where)
    expect(l.message).toMatch(msg)
  })

  it.each([
    [{ beam_size: 0 }, 'ResidualVQ.beam_size', /PositiveInt/],
    [{ beam_size: 9 }, 'ResidualVQ.beam_size', /at most the smallest codebook_size \(8\)/],
    [{ beam_size: 2.5 }, 'ResidualVQ.beam_size', /PositiveInt/],
    [{ eval_beam_size: 2 }, 'ResidualVQ.eval_beam_size', /needs beam_size/],
    [{ beam_size: 2, eval_beam_size: 12 }, 'ResidualVQ.eval_beam_size', /at most/],
    [{ beam_score_quantizer_weights: [1, 1] }, 'ResidualVQ.beam_score_quantizer_weights', /one weight per layer \(3\)/],
    [{ beam_score_quantizer_weights: [1, NaN, 1] }, 'ResidualVQ.beam_score_quantizer_weights[1]', /Finite/],
    [{ beam_size: 2, commitment_weight: 0 }, 'ResidualVQ.commitment_weight', /beam search/],
    [{ implicit_neural_codebook: 1 }, 'ResidualVQ.implicit_neural_codebook', /boolean/],
    [{ implicit_neural_codebook: true, use_cosine_sim: true }, 'ResidualVQ.implicit_neural_codebook', /euclidean/],
    [{ implicit_neural_codebook: true, shared_codebook: true }, 'ResidualVQ.implicit_neural_codebook', /shared/],
    [{ implicit_neural_codebook: true, kmeans_init: true }, 'ResidualVQ.kmeans_init', /learnable/],
    [{ mlp_kwargs: { depth: -1 } }, 'ResidualVQ.mlp_kwargs.depth', /NonNegInt/],
    [{ mlp_kwargs: { dim_hidden: 0 } }, 'ResidualVQ.mlp_kwargs.dim_hidden', /PositiveInt/],
    [{ mlp_kwargs: { width: 3 } }, 'ResidualVQ.mlp_kwargs.width', /unknown key "width"/],
  ])('ResidualVQ rejects %j at %s', (extra, where, msg) => {
    const l = leftOf(decodeRVQ({ dim: 4, codebook_size: 8, num_quantizers: 3, ...extra }))
    expect(l.kind).toBe('config')
    expect(l.where).toBe(where)
    expect(l.message).toMatch(msg)
  })

  it('LFQ derives dim and codebook size from each other', () => {
    expect(E.isRight(decodeLFQ({ dim: 5 })) && (decodeLFQ({ dim: 5 }) as E.Right<{ codebook_size: number }>).right.codebook_size).toBe(32)
    const c = decodeLFQ({ codebook_size: 16, num_codebooks: 2 })
    expect(E.isRight(c) && c.right).toMatchObject({ dim: 8, has_projections: false, keep_num_codebooks_dim: true })
  })

  it('residual and grouped configs name the failing field', () => {
    expect(leftOf(decodeResidualFSQ({ levels: [8, 5], num_quantizers: 0 })).where).toBe('ResidualFSQ.num_quantizers')
    expect(leftOf(decodeResidualFSQ({ levels: [8, 5], num_quantizers: 2, soft_clamp_input_value: 2 })).where).toBe('ResidualFSQ.soft_clamp_input_value')
    expect(leftOf(decodeResidualFSQ({ levels: [8, 1], num_quantizers: 2 })).where).toBe('ResidualFSQ.levels')
    expect(leftOf(decodeResidualLFQ({ dim: 8, num_quantizers: 2, codebook_size: 10 })).where).toBe('ResidualLFQ.layers.0.codebook_size')
    expect(leftOf(decodeGroupedResidualFSQ({ dim: 9, groups: 2, levels: [8, 5], num_quantizers: 2 })).where).toBe('GroupedResidualFSQ.groups')
    expect(leftOf(decodeGroupedResidualFSQ({ dim: 8, groups: 2, levels: [8, 5], num_quantizers: 2, bogus: 1 })).message).toMatch(/unknown key "bogus"/)
    expect(leftOf(decodeLatentQuantize({ levels: 5, dim: 4 })).where).toBe('LatentQuantize.codebook_dim')
  })
})
