import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, linear, random, straightThrough, tensorOf } from '@tessera/core'
import { Finite, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import { codebookDistances } from '../vq/codebook.js'
import { rotateTo } from '../vq/gradient-routing.js'
import * as t from 'io-ts'

/**
 * SimVQ (arXiv:2411.02038): a frozen random codebook whose codes pass through a learned linear map
 * (`code_transform`, no bias); the nearest transformed code is the output. Only the default
 * linear transform of the reference is offered (a custom `codebook_transform` module is refused).
 */
export const SimVQOptions = strict(
  'SimVQ',
  { dim: PositiveInt, codebook_size: PositiveInt },
  {
    channel_first: t.boolean,
    rotation_trick: t.boolean,
    input_to_quantize_commit_loss_weight: Finite,
    commitment_weight: Finite,
    frozen_codebook_dim: t.union([PositiveInt, t.null]),
  },
)

export interface SimVQConfig {
  readonly dim: number
  readonly codebook_size: number
  readonly channel_first: boolean
  readonly rotation_trick: boolean
  readonly input_to_quantize_commit_loss_weight: number
  readonly commitment_weight: number
  readonly frozen_codebook_dim: number
}

export function decodeSimVQ(input: unknown, where = 'SimVQ'): E.Either<TesseraError, SimVQConfig> {
  return decodeWith(SimVQOptions, input, where, (o) => {
    const cfg: SimVQConfig = {
      dim: o.dim,
      codebook_size: o.codebook_size,
      channel_first: o.channel_first ?? false,
      rotation_trick: o.rotation_trick ?? true,
      input_to_quantize_commit_loss_weight: o.input_to_quantize_commit_loss_weight ?? 0.25,
      commitment_weight: o.commitment_weight ?? 1,
      frozen_codebook_dim: o.frozen_codebook_dim ?? o.dim,
    }
    return checks(cfg, [
      () => check(cfg.codebook_size <= 2 ** 24, where, 'codebook_size', `must be at most 2^24, got ${cfg.codebook_size}`),
      () => check(cfg.commitment_weight >= 0, where, 'commitment_weight', `must be >= 0, got ${cfg.commitment_weight}`),
      () => check(cfg.input_to_quantize_commit_loss_weight >= 0, where, 'input_to_quantize_commit_loss_weight', 'must be >= 0'),
    ])
  })
}

export interface SimVQ extends Quantizer<SimVQConfig> {
  readonly kind: 'SimVQ'
  /** The implicit codebook `code_transform(frozen_codebook)` (K, dim). */
  codebook(params: Named<Tensor>, state: Named<Tensor>): Tensor
}

const FROZEN = 'frozen_codebook'
const WEIGHT = 'code_transform.weight'

export function makeSimVQ(cfg: SimVQConfig): SimVQ {
  const W = 'SimVQ'
  const { dim, codebook_size: K, frozen_codebook_dim: fd } = cfg
  const paramSpecs: Record<string, Aval> = { [WEIGHT]: { shape: [dim, fd], dtype: 'float32' } }
  const stateSpecs: Record<string, Aval> = { [FROZEN]: { shape: [K, fd], dtype: 'float32' } }

  const init = (key: random.Key): Init => {
    const [kc, kw] = random.splitKey(key, 2) as [random.Key, random.Key]
    const scale = fd ** -0.5
    const frozen = random.normalHost(kc, K * fd).map((v) => v * scale)
    const bound = 1 / Math.sqrt(fd) // nn.Linear's default init
    const w = random.uniformHost(kw, dim * fd).map((v) => (2 * v - 1) * bound)
    return { params: { [WEIGHT]: tensorOf(w, [dim, fd]) }, state: { [FROZEN]: tensorOf(frozen, [K, fd]) } as Record<string, HostTensor> }
  }

  const get = (rec: Named<Tensor> | undefined, name: string, op: string) => {
    const v = rec?.[name]
    if (!v) throw new TesseraError('input', `${W}.${op}`, `missing ${name}`)
    return v
  }
  const codebook = (params: Named<Tensor>, state: Named<Tensor>) => linear(get(state, FROZEN, 'codebook'), { weight: get(params, WEIGHT, 'codebook') })

  /** (b, ..., d) or channel-first (b, d, ...) -> (b, N, d) and back. */
  const layoutOf = (x: Tensor) => {
    if (x.rank < 2) throw new TesseraError('shape', W, `input needs rank >= 2, got [${x.shape.join(',')}]`)
    const xl = cfg.channel_first ? x.moveAxis(1, -1) : x
    if (xl.shape[xl.rank - 1] !== dim)
      throw new TesseraError('shape', W, `input has ${xl.shape[xl.rank - 1]} features on axis ${cfg.channel_first ? 1 : -1}; expected dim ${dim}`)
    const mid = xl.shape.slice(1, -1)
    const b = xl.shape[0]!
    return {
      x: xl.reshape([b, -1, dim]),
      unpack: (q: Tensor) => {
        const r = q.reshape([b, ...mid, dim])
        return cfg.channel_first ? r.moveAxis(-1, 1) : r
      },
      unpackIdx: (i: Tensor) => i.reshape([b, ...mid]),
    }
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    if (x.dtype !== 'float32') throw new TesseraError('dtype', W, `input must be float32, got ${x.dtype}`)
    const lay = layoutOf(x)
    const cb = codebook(params, state) // (K, dim)
    const flat = lay.x
    const [b, n] = flat.shape as [number, number]
    const ind = codebookDistances(flat.reshape([1, b * n, dim]), cb.expandDims(0), false).argmax(-1).reshape([b, n])
    const q = cb.gather(ind, 0) // (b, n, dim)
    // mse(x.detach(), q) + w · mse(x, q.detach()): the same value, different gradients
    const toCodes = flat.stopGradient().sub(q).square().mean()
    const toInput = flat.sub(q.stopGradient()).square().mean()
    const commit = toCodes.add(toInput.mul(cfg.input_to_quantize_commit_loss_weight))
    const loss = commit.mul(cfg.commitment_weight)
    // the reference routes gradients in every mode; their forward value is q up to rounding, so eval returns q exactly
    const out = opts.training ? (cfg.rotation_trick ? rotateTo(flat, q) : straightThrough(flat, q)) : q
    return { quantized: lay.unpack(out), indices: lay.unpackIdx(ind), loss, losses: { commitment: loss }, state, extra: { codes: q } }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${W}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    const codes = linear(get(state, FROZEN, 'indicesToCodes').gather(indices, 0), { weight: get(params, WEIGHT, 'indicesToCodes') })
    return cfg.channel_first ? codes.moveAxis(-1, 1) : codes
  }

  return { kind: 'SimVQ', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes, codebook }
}

export const simVQ = (options: unknown): E.Either<TesseraError, SimVQ> => E.map(makeSimVQ)(decodeSimVQ(options))
