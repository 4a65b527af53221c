import * as E from 'fp-ts/lib/Either.js'
import type { TesseraError } from '@tessera/core'
import type { Quantizer } from '@tessera/quantizers'
import { fsq, latentQuantize, lfq, residualFSQ, residualLFQ, residualVQ, simVQ, vectorQuantize } from '@tessera/quantizers'

/**
 * The quantizers the demo can train, each sized for MNIST: `tokenDim` is the width of one
 * latent token the encoder emits, `codebookSize` the codes of one codebook and `codebooks` how
 * many indices a token gets (one per residual layer). Every one is used only through the
 * Quantizer contract. LatentQuantize reads a rank-3 input as channel-first (b, dim, n), as the
 * reference does, so its recipe wraps it in `tokensChannelFirst`.
 */
interface Recipe {
  readonly describe: string
  readonly tokenDim: number
  readonly codebookSize: number
  readonly codebooks: number
  /** Default latent tokens per image: enough bits for a 3x better reconstruction than the mean image. */
  readonly tokens: number
  /** Config as passed to the quantizer's factory (saved with the checkpoint). */
  readonly options: Readonly<Record<string, unknown>>
  readonly make: Factory
}

type Factory = (options: unknown) => E.Either<TesseraError, Quantizer<unknown>>

/** A recipe, named and built. */
export interface QuantizerChoice extends Omit<Recipe, 'make'> {
  readonly name: string
  readonly quantizer: Quantizer<unknown>
}

/**
 * Hands a channel-first quantizer (b, dim, n) instead of the encoder's (b, n, dim) tokens, and
 * turns its output back. The tokens are bounded to (-0.5, 0.5) first, where LatentQuantize's
 * values start: its loss is zero-gradient for the encoder (straight-through), so unbounded tokens
 * drift past the outermost values and training stalls.
 */
const tokensChannelFirst = (q: Quantizer<unknown>): Quantizer<unknown> => ({
  ...q,
  apply: (params, state, x, opts) => {
    const r = q.apply(params, state, x.tanh().mul(0.5).mT, opts)
    return { ...r, quantized: r.quantized.mT }
  },
})

const recipes: Readonly<Record<string, Recipe>> = {
  fsq: {
    describe: 'FSQ, levels [8,5,5,5] (1000 codes)',
    tokenDim: 4, codebookSize: 1000, codebooks: 1, tokens: 32,
    options: { levels: [8, 5, 5, 5] },
    make: fsq as Factory,
  },
  lfq: {
    describe: 'LFQ, 2^8 codes, spherical (tokens and codes on the unit sphere), entropy loss 0.001, no commitment loss',
    tokenDim: 8, codebookSize: 256, codebooks: 1, tokens: 32,
    // Spherical: unnormalized tokens let the straight-through gradient shrink them toward the
    // bias (the decoder sees ±1 whatever their size), so many bits end up the same for every
    // image; on the sphere the encoder can only turn a token, which flips bits (README.md)
    options: { dim: 8, codebook_size: 256, entropy_loss_weight: 0.001, commitment_loss_weight: 0, spherical: true },
    make: lfq as Factory,
  },
  vq: {
    describe: 'VectorQuantize, 256 codes of dim 8, EMA codebook',
    tokenDim: 8, codebookSize: 256, codebooks: 1, tokens: 64,
    options: { dim: 8, codebook_size: 256, decay: 0.8, commitment_weight: 1 },
    make: vectorQuantize as Factory,
  },
  'residual-vq': {
    describe: 'ResidualVQ, 3 layers of 256 codes of dim 8',
    tokenDim: 8, codebookSize: 256, codebooks: 3, tokens: 32,
    options: { dim: 8, codebook_size: 256, num_quantizers: 3, decay: 0.8, commitment_weight: 1 },
    make: residualVQ as Factory,
  },
  'residual-fsq': {
    describe: 'ResidualFSQ, 2 layers of levels [8,5,5,5]',
    tokenDim: 4, codebookSize: 1000, codebooks: 2, tokens: 32,
    options: { levels: [8, 5, 5, 5], num_quantizers: 2, dim: 4 },
    make: residualFSQ as Factory,
  },
  'residual-lfq': {
    describe: 'ResidualLFQ, 3 layers of 2^8 codes, spherical, entropy loss 0.001',
    tokenDim: 8, codebookSize: 256, codebooks: 3, tokens: 32,
    // spherical for the same reason as LFQ's recipe: it keeps the bits from dying (README.md)
    options: { dim: 8, codebook_size: 256, num_quantizers: 3, entropy_loss_weight: 0.001, commitment_loss_weight: 0, spherical: true },
    make: residualLFQ as Factory,
  },
  'latent-quantize': {
    describe: 'LatentQuantize, levels [8,5,5,5] (fed channel-first)',
    tokenDim: 4, codebookSize: 1000, codebooks: 1, tokens: 32,
    options: { levels: [8, 5, 5, 5], dim: 4 },
    make: ((o: unknown) => E.map((q: Quantizer<unknown>) => tokensChannelFirst(q))(latentQuantize(o) as E.Either<TesseraError, Quantizer<unknown>>)) as Factory,
  },
  simvq: {
    describe: 'SimVQ, 256 codes of dim 8 (frozen codebook through a learned linear map)',
    tokenDim: 8, codebookSize: 256, codebooks: 1, tokens: 64,
    options: { dim: 8, codebook_size: 256 },
    make: simVQ as Factory,
  },
}

export const quantizerNames = Object.keys(recipes)

export function chooseQuantizer(name: string): E.Either<TesseraError | string, QuantizerChoice> {
  const r = recipes[name]
  if (!r) return E.left(`unknown quantizer "${name}"; choose one of ${quantizerNames.join(', ')}`)
  const { make, ...recipe } = r
  return E.map((q: Quantizer<unknown>): QuantizerChoice => ({ name, ...recipe, quantizer: q }))(make(r.options))
}
