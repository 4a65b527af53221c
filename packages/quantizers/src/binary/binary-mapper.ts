import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random, tensorOf, where } from '@tessera/core'
import { Finite, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'

/** ln 2: one bit in nats, the reference's default KL threshold. */
export const NAT = Math.log(2)

/** The one-hot output has 2^bits entries per token and indices must stay exact: the same cap as LFQ's. */
export const MAX_BINARY_MAPPER_BITS = 20

/**
 * BinaryMapper's keyword arguments, plus its forward arguments as config options (as LFQ's
 * `inv_temperature`): `temperature`, and `straight_through`, `calc_aux_loss`, `deterministic`,
 * whose null means the reference's mode-dependent default.
 */
export const BinaryMapperOptions = strict(
  'BinaryMapper',
  {},
  {
    bits: PositiveInt,
    kl_loss_threshold: Finite,
    deterministic_on_eval: t.boolean,
    temperature: Finite,
    straight_through: t.union([t.boolean, t.null]),
    calc_aux_loss: t.union([t.boolean, t.null]),
    deterministic: t.union([t.boolean, t.null]),
  },
)

export interface BinaryMapperConfig {
  readonly bits: number
  readonly num_codes: number
  /** num_codes under the name the other quantizers use (index ranges read it) */
  readonly codebook_size: number
  readonly kl_loss_threshold: number
  readonly deterministic_on_eval: boolean
  readonly temperature: number
  readonly straight_through: boolean | null
  readonly calc_aux_loss: boolean | null
  readonly deterministic: boolean | null
}

export function decodeBinaryMapper(input: unknown, where_ = 'BinaryMapper'): E.Either<TesseraError, BinaryMapperConfig> {
  return decodeWith(BinaryMapperOptions, input, where_, (o) => {
    const bits = o.bits ?? 1
    const cfg: BinaryMapperConfig = {
      bits,
      num_codes: 2 ** bits,
      codebook_size: 2 ** bits,
      kl_loss_threshold: o.kl_loss_threshold ?? NAT,
      deterministic_on_eval: o.deterministic_on_eval ?? false,
      temperature: o.temperature ?? 1,
      straight_through: o.straight_through ?? null,
      calc_aux_loss: o.calc_aux_loss ?? null,
      deterministic: o.deterministic ?? null,
    }
    return checks(cfg, [
      () => check(bits <= MAX_BINARY_MAPPER_BITS, where_, 'bits', `must be at most ${MAX_BINARY_MAPPER_BITS} (a one-hot of 2^bits per token), got ${bits}`),
      () => check(cfg.temperature > 0, where_, 'temperature', `must be positive, got ${cfg.temperature}`),
    ])
  })
}

/** log(sigmoid(x)) without overflow: min(x, 0) - log(1 + exp(-|x|)). */
export const logSigmoid = (x: Tensor): Tensor => x.minimum(0).sub(x.abs().neg().exp().add(1).log())

export interface BinaryMapper extends Quantizer<BinaryMapperConfig> {
  readonly kind: 'BinaryMapper'
  /**
   * The reference's `log_prob`: log-probability of the codes `indices` (...) (or the argmax of a
   * one-hot (..., 2^bits)) under independent Bernoulli bits with these logits (..., bits); summed over
   * the bits, or per bit with `sumBits: false`.
   */
  logProb(logits: Tensor, of: { readonly indices: Tensor } | { readonly oneHot: Tensor }, sumBits?: boolean): Tensor
  /** Per-token KL from the uniform code distribution above the threshold: relu(bits ln 2 - H(logits) - threshold), shape (...). */
  auxKlLoss(logits: Tensor): Tensor
  /** int32 indices (...) -> their bits (..., bits), int32, bit 0 the least significant. */
  indicesToBits(indices: Tensor): Tensor
}

/**
 * BinaryMapper (arXiv 2510.17558): each token's `bits` logits are independent Bernoulli bits,
 * sampled (or thresholded at 1/2 when deterministic) and read as a binary number with bit 0 the
 * LEAST significant (LFQ is the other way round); the output is the one-hot of that number,
 * `(..., 2^bits)`, with a straight-through gradient from the soft code probabilities in training.
 * Sampling draws from `opts.key`.
 */
export function makeBinaryMapper(cfg: BinaryMapperConfig): BinaryMapper {
  const W = 'BinaryMapper'
  const { bits, num_codes: K } = cfg
  const powers = Array.from({ length: bits }, (_, i) => 2 ** i)
  const stateSpecs: Record<string, Aval> = {
    power_two: { shape: [bits], dtype: 'int32' },
    codes: { shape: [K, bits], dtype: 'bool' },
  }

  const init = (_key: random.Key): Init => {
    const codes = new Uint8Array(K * bits)
    for (let k = 0; k < K; k++) for (let i = 0; i < bits; i++) codes[k * bits + i] = (k >> i) & 1
    return { params: {}, state: { power_two: tensorOf(powers, [bits], 'int32'), codes: tensorOf(codes, [K, bits], 'bool') } as Record<string, HostTensor> }
  }

  const checkLogits = (logits: Tensor, op: string) => {
    if (logits.rank < 1 || logits.shape[logits.rank - 1] !== bits)
      throw new TesseraError('shape', `${W}.${op}`, `logits must have a last dimension of ${bits}, got [${logits.shape.join(',')}]`)
    if (logits.dtype !== 'float32') throw new TesseraError('dtype', `${W}.${op}`, `logits must be float32, got ${logits.dtype}`)
  }

  const indicesToBits = (indices: Tensor): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${W}.indicesToBits`, `indices must be int32, got ${indices.dtype}`)
    return indices.expandDims(-1).idiv(indices.builder.constant(powers, [bits], 'int32')).mod(2)
  }

  const oneHotOf = (indices: Tensor): Tensor => indices.expandDims(-1).eq(indices.builder.iota([K], 0, 'int32')).cast('float32')

  const auxKlLoss = (logits: Tensor): Tensor => {
    checkLogits(logits, 'auxKlLoss')
    const p = logits.sigmoid()
    const entropy = p.mul(logSigmoid(logits)).add(p.rsub(1).mul(logSigmoid(logits.neg()))).sum(-1).neg()
    return entropy.rsub(bits * NAT).sub(cfg.kl_loss_threshold).relu()
  }

  const logProb = (logits: Tensor, of: { readonly indices: Tensor } | { readonly oneHot: Tensor }, sumBits = true): Tensor => {
    checkLogits(logits, 'logProb')
    const indices = 'indices' in of ? of.indices : of.oneHot.argmax(-1)
    const set = indicesToBits(indices).eq(1)
    const lp = where(set, logSigmoid(logits), logSigmoid(logits.neg()))
    return sumBits ? lp.sum(-1) : lp
  }

  const apply = (_params: Named<Tensor>, state: Named<Tensor>, logits: Tensor, opts: ApplyOptions): QuantizeResult => {
    checkLogits(logits, 'apply')
    const deterministic = cfg.deterministic ?? (cfg.deterministic_on_eval && !opts.training)
    const straight = cfg.straight_through ?? opts.training
    const withAux = cfg.calc_aux_loss ?? opts.training
    const b = logits.builder
    const prob = logits.div(cfg.temperature).sigmoid()
    let sampled: Tensor
    if (deterministic) sampled = prob.gt(0.5)
    else {
      if (!opts.key) throw new TesseraError('input', `${W}.deterministic`, 'sampling the bits needs a random key (opts.key); or set deterministic (deterministic_on_eval for eval)')
      sampled = b.randomUniform(opts.key, logits.shape).lt(prob) // torch's bernoulli: u < p
    }
    const indices = where(sampled, b.constant(powers, [bits], 'int32'), 0).sum(-1)
    let oneHot = oneHotOf(indices)
    if (straight) {
      // soft code probabilities prod_i p(bit_i), in log space: matmuls with the code table and its complement
      const codeBits = b.iota([K], 0, 'int32').expandDims(-1).idiv(b.constant(powers, [bits], 'int32')).mod(2).cast('float32') // (K, bits)
      const flat = logits.reshape([-1, bits])
      const logG = logSigmoid(flat).matmul(codeBits.mT).add(logSigmoid(flat.neg()).matmul(codeBits.rsub(1).mT))
      const soft = logG.exp().reshape(oneHot.shape)
      oneHot = oneHot.add(soft).sub(soft.stopGradient())
    }
    const zero = b.scalar(0)
    const perToken = withAux ? auxKlLoss(logits) : undefined
    const loss = perToken ? (perToken.rank === 0 ? perToken : perToken.mean()) : zero
    const extra: Record<string, Tensor> = { prob }
    if (perToken) extra['aux_kl_loss'] = perToken
    return { quantized: oneHot, indices, loss, losses: { aux_kl_loss: loss }, state, extra }
  }

  const indicesToCodes = (_params: Named<Tensor>, indices: Tensor): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${W}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    return oneHotOf(indices)
  }

  return { kind: 'BinaryMapper', config: cfg, paramSpecs: {}, stateSpecs, init, apply, indicesToCodes, logProb, auxKlLoss, indicesToBits }
}

export const binaryMapper = (options: unknown): E.Either<TesseraError, BinaryMapper> => E.map(makeBinaryMapper)(decodeBinaryMapper(options))
