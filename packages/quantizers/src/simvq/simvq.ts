import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, linear, prefixed, random, scoped, straightThrough, tensorOf } from '@tessera/core'
import { Finite, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { Stage } from '../sequential/sequential.js'
import { codebookDistances } from '../vq/codebook.js'
import { rotateTo } from '../vq/gradient-routing.js'
import * as t from 'io-ts'

/** A custom `codebook_transform`: a stage with parameters, or a parameterless traceable function. */
export type CodebookTransform = Stage | ((codes: Tensor) => Tensor)

const isStage = (u: unknown): u is Stage =>
  typeof u === 'object' && u !== null && typeof (u as Stage).apply === 'function' && typeof (u as Stage).init === 'function' &&
  typeof (u as Stage).paramSpecs === 'object' && (u as Stage).paramSpecs !== null

/** Functions and stages are values a config may hold; the codec checks only that they are one. */
export const CodebookTransformCodec = new t.Type<CodebookTransform, CodebookTransform, unknown>(
  'CodebookTransform',
  (u): u is CodebookTransform => typeof u === 'function' || isStage(u),
  (u, c) => (typeof u === 'function' || isStage(u) ? t.success(u as CodebookTransform) : t.failure(u, c)),
  t.identity,
)

/** The reference's `init_fn`, on the host: the frozen codebook (K, frozen_codebook_dim) in, the same shape out. */
export type CodebookInit = (codebook: HostTensor) => HostTensor

export const CodebookInitCodec = new t.Type<CodebookInit, CodebookInit, unknown>(
  'CodebookInit',
  (u): u is CodebookInit => typeof u === 'function',
  (u, c) => (typeof u === 'function' ? t.success(u as CodebookInit) : t.failure(u, c)),
  t.identity,
)

/**
 * SimVQ (arXiv:2411.02038): a frozen random codebook whose codes pass through a learned map
 * (`code_transform`, by default a linear layer without bias); the nearest transformed code is the
 * output. `codebook_transform` replaces the map with a stage (its parameters under
 * `code_transform.`) or a parameterless function; `init_fn` reshapes the frozen codebook at init.
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
    codebook_transform: t.union([CodebookTransformCodec, t.null]),
    init_fn: t.union([CodebookInitCodec, t.null]),
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
  /** null: the reference's default nn.Linear(frozen_codebook_dim, dim, bias=False) */
  readonly codebook_transform: CodebookTransform | null
  /** null: the identity */
  readonly init_fn: CodebookInit | null
}

/** A SimVQ config from decoded options, the reference's defaults filled in (ResidualSimVQ's layers too). */
export const simVQConfigOf = (o: t.TypeOf<typeof SimVQOptions>): SimVQConfig => ({
  dim: o.dim,
  codebook_size: o.codebook_size,
  channel_first: o.channel_first ?? false,
  rotation_trick: o.rotation_trick ?? true,
  input_to_quantize_commit_loss_weight: o.input_to_quantize_commit_loss_weight ?? 0.25,
  commitment_weight: o.commitment_weight ?? 1,
  frozen_codebook_dim: o.frozen_codebook_dim ?? o.dim,
  codebook_transform: o.codebook_transform ?? null,
  init_fn: o.init_fn ?? null,
})

export function decodeSimVQ(input: unknown, where = 'SimVQ'): E.Either<TesseraError, SimVQConfig> {
  return decodeWith(SimVQOptions, input, where, (o) => {
    const cfg = simVQConfigOf(o)
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
const TRANSFORM = 'code_transform.'
const WEIGHT = `${TRANSFORM}weight`

export function makeSimVQ(cfg: SimVQConfig): SimVQ {
  const W = 'SimVQ'
  const { dim, codebook_size: K, frozen_codebook_dim: fd } = cfg
  const custom = cfg.codebook_transform
  const stage: Stage | null = custom === null ? null : typeof custom === 'function' ? { kind: 'fn', paramSpecs: {}, init: () => ({}), apply: (_p, x) => custom(x) } : custom
  const paramSpecs: Record<string, Aval> = stage ? prefixed(stage.paramSpecs, TRANSFORM) : { [WEIGHT]: { shape: [dim, fd], dtype: 'float32' } }
  const stateSpecs: Record<string, Aval> = { [FROZEN]: { shape: [K, fd], dtype: 'float32' } }

  const initFrozen = (key: random.Key): HostTensor => {
    const scale = fd ** -0.5
    const frozen = tensorOf(random.normalHost(key, K * fd).map((v) => v * scale), [K, fd])
    if (!cfg.init_fn) return frozen
    const out = cfg.init_fn(frozen)
    // init returns host tensors, not Eithers: a wrong result is a programming error, thrown with the option named
    if (!out || out.dtype !== 'float32' || out.shape.length !== 2 || out.shape[0] !== K || out.shape[1] !== fd)
      throw new TesseraError('config', `${W}.init_fn`, `must return a float32 [${K},${fd}] tensor, got ${out ? `${out.dtype}[${out.shape.join(',')}]` : String(out)}`)
    return out
  }

  const init = (key: random.Key): Init => {
    const [kc, kw] = random.splitKey(key, 2) as [random.Key, random.Key]
    const state = { [FROZEN]: initFrozen(kc) } as Record<string, HostTensor>
    if (stage) return { params: prefixed(stage.init(kw), TRANSFORM), state }
    const bound = 1 / Math.sqrt(fd) // nn.Linear's default init
    const w = random.uniformHost(kw, dim * fd).map((v) => (2 * v - 1) * bound)
    return { params: { [WEIGHT]: tensorOf(w, [dim, fd]) }, state }
  }

  const get = (rec: Named<Tensor> | undefined, name: string, op: string) => {
    const v = rec?.[name]
    if (!v) throw new TesseraError('input', `${W}.${op}`, `missing ${name}`)
    return v
  }
  /** code_transform applied to frozen codes (..., fd) -> (..., dim); a custom transform's result is shape-checked. */
  const transform = (params: Named<Tensor>, codes: Tensor, op: string): Tensor => {
    if (!stage) return linear(codes, { weight: get(params, WEIGHT, op) })
    const out = stage.apply(scoped(params, TRANSFORM), codes)
    const want = [...codes.shape.slice(0, -1), dim]
    if (out.dtype !== 'float32' || out.shape.length !== want.length || out.shape.some((d, i) => d !== want[i]))
      throw new TesseraError('shape', `${W}.codebook_transform`, `must map float32[${codes.shape.join(',')}] to float32[${want.join(',')}], got ${out.dtype}[${out.shape.join(',')}]`)
    return out
  }
  const codebook = (params: Named<Tensor>, state: Named<Tensor>) => transform(params, get(state, FROZEN, 'codebook'), 'codebook')

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
    const codes = transform(params, get(state, FROZEN, 'indicesToCodes').gather(indices, 0), 'indicesToCodes')
    return cfg.channel_first ? codes.moveAxis(-1, 1) : codes
  }

  return { kind: 'SimVQ', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes, codebook }
}

export const simVQ = (options: unknown): E.Either<TesseraError, SimVQ> => E.map(makeSimVQ)(decodeSimVQ(options))
