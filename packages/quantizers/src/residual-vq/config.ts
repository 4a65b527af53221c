import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as t from 'io-ts'
import { TesseraError } from '@tessera/core'
import { Finite, NonNegInt, PositiveInt, check, checks, decode, strict } from '../config/codec.js'
import type { VQConfig } from '../vq/config.js'
import { resolveVQ, vqOptionalProps, vqOwnProps } from '../vq/config.js'
import { vqReparamProps } from '../vq/reparam-config.js'

/** Options a ResidualVQ passes on to every layer's VectorQuantize (all of VQ's, less those RVQ sets itself). */
const { codebook_dim: _cd, heads: _h, separate_codebook_per_head: _s, accept_image_fmap: _a, accept_3d_fmap: _a3, channel_last: _cl, ...layerProps } = vqOptionalProps

const rvqOwnProps = {
  num_quantizers: t.union([PositiveInt, t.null]),
  codebook_dim: t.union([PositiveInt, t.null]),
  shared_codebook: t.boolean,
  heads: t.literal(1),
  quantize_dropout: t.boolean,
  quantize_dropout_cutoff_index: NonNegInt,
  quantize_dropout_multiple_of: PositiveInt,
  accept_image_fmap: t.boolean,
  quant_grad_frac: t.literal(0),
  beam_size: t.union([PositiveInt, t.null]),
  eval_beam_size: t.union([PositiveInt, t.null]),
  beam_score_quantizer_weights: t.union([t.array(Finite), t.null]),
  implicit_neural_codebook: t.boolean,
  mlp_kwargs: strict('ResidualVQ.mlp_kwargs', {}, { dim_hidden: t.union([PositiveInt, t.null]), depth: NonNegInt }),
}

/**
 * VectorQuantize's own and reparametrisation options, which the reference's ResidualVQ hands every
 * layer through `**vq_kwargs`. The decoder takes them all so that the unsupported ones are refused
 * with their reason (REFUSED_LAYER_OPTIONS) rather than as unknown keys.
 */
const layerOwnProps = { ...vqOwnProps, ...vqReparamProps }

export const rvqOptionalProps = { ...rvqOwnProps, ...layerProps, ...layerOwnProps }

/**
 * Layer options ResidualVQ does not support yet, each with why: dead-code revival of a learnable
 * codebook, a tied bridge stepped by every layer's optimizer, a manual in-place step; none of which
 * ResidualVQ's loops carry.
 */
const REFUSED_LAYER_OPTIONS: Record<string, { readonly on: (o: RVQOptions) => boolean; readonly why: string }> = {
  directional_reparam: {
    on: (o) => o.directional_reparam === true,
    why: "is not supported by ResidualVQ yet: DiVeQ needs dead-code revival of a learnable codebook, which rewrites a parameter (VectorQuantize's updatedParams) that ResidualVQ's layers do not hand back",
  },
  vq_bridge: {
    on: (o) => o.vq_bridge != null && o.in_place_codebook_optimizer != null,
    why: "is not supported with in_place_codebook_optimizer by ResidualVQ yet: the reference's layers share one bridge module, so every layer's optimizer would step the tied bridge parameters in turn",
  },
  manual_in_place_optimizer_update: {
    on: (o) => o.manual_in_place_optimizer_update === true,
    why: 'is not supported by ResidualVQ yet: it has no updateInPlaceOptimizer of its own to take the layers\' gradients (the automatic in-place step is supported)',
  },
}

/**
 * The first layer option set away from its default that the beam search and QINCo loop
 * (path-search.ts, which computes the layers' codes itself) does not model; undefined when none.
 */
export function pathSearchUnsupported(l: VQConfig): string | undefined {
  if (l.affine_param) return 'affine_param'
  if (l.commitment_use_cross_entropy_loss) return 'commitment_use_cross_entropy_loss'
  if (!l.return_zeros_for_masked_padding) return 'return_zeros_for_masked_padding'
  if (l.sync_update_v > 0) return 'sync_update_v'
  if (l.in_place_codebook_optimizer !== null) return 'in_place_codebook_optimizer'
  if (l.vq_bridge !== null) return 'vq_bridge'
  return undefined
}

/** ResidualVQ's keyword arguments (the reference's, minus its own `diveq`), with the layer options it hands every VectorQuantize. */
export const RVQOptions = strict(
  'ResidualVQ',
  { dim: PositiveInt, codebook_size: t.union([PositiveInt, t.array(PositiveInt)]) },
  rvqOptionalProps,
)
export type RVQOptions = t.TypeOf<typeof RVQOptions>

export interface RVQConfig {
  readonly dim: number
  readonly num_quantizers: number
  readonly codebook_sizes: readonly number[]
  readonly codebook_dim: number
  readonly shared_codebook: boolean
  readonly quantize_dropout: boolean
  readonly quantize_dropout_cutoff_index: number
  readonly quantize_dropout_multiple_of: number
  readonly accept_image_fmap: boolean
  readonly has_projections: boolean
  /** Beam width in training and in eval (the reference's `beam_size`, `eval_beam_size`); null or 1 is greedy. */
  readonly beam_size: number | null
  readonly eval_beam_size: number | null
  /** Weight of each layer's loss in a path's beam score (`beam_score_quantizer_weights`, default all 1). */
  readonly beam_score_weights: readonly number[]
  /** QINCo: layer q >= 1 quantizes with codes made by an MLP from its codebook and the earlier layers' output. */
  readonly implicit_neural_codebook: boolean
  /** The QINCo MLPs' hidden width and number of residual blocks (`mlp_kwargs`). */
  readonly mlp: { readonly dim_hidden: number; readonly depth: number }
  /** The resolved config of each layer's VectorQuantize (dim = codebook_dim, no projections). */
  readonly layers: readonly VQConfig[]
}

export function resolveRVQ(o: RVQOptions, where = 'ResidualVQ'): E.Either<TesseraError, RVQConfig> {
  const sizes = Array.isArray(o.codebook_size) ? [...o.codebook_size] : undefined
  const nq = o.num_quantizers ?? sizes?.length ?? 0
  const codebook_sizes = sizes ?? Array.from({ length: nq }, () => o.codebook_size as number)
  const codebook_dim = o.codebook_dim ?? o.dim
  const {
    dim: _d, codebook_size: _c, num_quantizers: _n, codebook_dim: _cd2, shared_codebook: _s2, heads: _h2, quantize_dropout: _q,
    quantize_dropout_cutoff_index: _qc, quantize_dropout_multiple_of: _qm, accept_image_fmap: _ai, quant_grad_frac: _g,
    beam_size: _bs, eval_beam_size: _ebs, beam_score_quantizer_weights: _bw, implicit_neural_codebook: _inc, mlp_kwargs: _mk, ...userLayerKw
  } = o
  for (const [field, r] of Object.entries(REFUSED_LAYER_OPTIONS)) if (r.on(o)) return E.left(configError(where, field, r.why))
  const qinco = o.implicit_neural_codebook ?? false
  // QINCo learns every codebook by gradient (the reference overrides these two layer options)
  const layerKw = qinco ? { ...userLayerKw, learnable_codebook: true, ema_update: false } : userLayerKw
  if (qinco && (o.use_cosine_sim ?? false))
    return E.left(configError(where, 'implicit_neural_codebook', 'needs a euclidean codebook: the codebooks are learnable, which use_cosine_sim excludes (as in the reference)'))
  const layers: VQConfig[] = []
  for (const size of codebook_sizes) {
    const r = resolveVQ({ ...layerKw, dim: codebook_dim as never, codebook_size: size as never, codebook_dim: codebook_dim as never }, where)
    if (E.isLeft(r)) return r
    layers.push(r.right)
  }
  const shared = o.shared_codebook ?? false
  const cutoff = o.quantize_dropout_cutoff_index ?? 0
  const cfg: RVQConfig = {
    dim: o.dim,
    num_quantizers: nq,
    codebook_sizes,
    codebook_dim,
    shared_codebook: shared,
    quantize_dropout: (o.quantize_dropout ?? false) && nq > 1,
    quantize_dropout_cutoff_index: cutoff,
    quantize_dropout_multiple_of: o.quantize_dropout_multiple_of ?? 1,
    accept_image_fmap: o.accept_image_fmap ?? false,
    has_projections: codebook_dim !== o.dim,
    beam_size: o.beam_size ?? null,
    eval_beam_size: o.eval_beam_size ?? o.beam_size ?? null,
    beam_score_weights: o.beam_score_quantizer_weights ?? codebook_sizes.map(() => 1),
    implicit_neural_codebook: qinco,
    mlp: { dim_hidden: o.mlp_kwargs?.dim_hidden ?? codebook_dim, depth: o.mlp_kwargs?.depth ?? 4 },
    layers,
  }
  const smallest = Math.min(...codebook_sizes)
  const unmodelled = layers[0] ? pathSearchUnsupported(layers[0]) : undefined
  const beams = [o.beam_size ?? null, cfg.eval_beam_size].filter((v): v is number => v !== null && v > 1)
  return checks<RVQConfig>(cfg, [
    () => check(nq >= 1, where, 'num_quantizers', 'needs num_quantizers >= 1 (or codebook_size as a list)'),
    () =>
      check(
        !sizes || o.num_quantizers == null || sizes.length === o.num_quantizers,
        where,
        'codebook_size',
        `lists ${sizes?.length} sizes but num_quantizers is ${o.num_quantizers}`,
      ),
    () => check(!shared || new Set(codebook_sizes).size === 1, where, 'shared_codebook', 'a shared codebook needs one codebook_size for every layer'),
    () =>
      check(
        !cfg.quantize_dropout || cutoff < nq,
        where,
        'quantize_dropout_cutoff_index',
        `must be below num_quantizers (${nq}), got ${cutoff}`,
      ),
    () => check(o.eval_beam_size == null || o.beam_size != null, where, 'eval_beam_size', 'needs beam_size (as in the reference)'),
    () =>
      check(
        cfg.beam_score_weights.length === nq,
        where,
        'beam_score_quantizer_weights',
        `needs one weight per layer (${nq}), got ${cfg.beam_score_weights.length}`,
      ),
    () => check((o.beam_size ?? 0) <= smallest, where, 'beam_size', `a layer keeps its beam_size nearest codes, so it must be at most the smallest codebook_size (${smallest}), got ${o.beam_size}`),
    () => check((o.eval_beam_size ?? 0) <= smallest, where, 'eval_beam_size', `must be at most the smallest codebook_size (${smallest}), got ${o.eval_beam_size}`),
    () =>
      check(
        beams.length === 0 || layers[0]!.commitment_weight > 0,
        where,
        'commitment_weight',
        'beam search scores paths by the commitment loss, so it must be > 0 when beam_size is over 1',
      ),
    () => check(!(qinco && shared), where, 'implicit_neural_codebook', 'a shared codebook with implicit neural codebooks is not supported'),
    () =>
      check(
        !(shared && (layers[0]?.in_place_codebook_optimizer ?? null) !== null),
        where,
        'in_place_codebook_optimizer',
        'is not supported with shared_codebook: the reference then defers the step to update_in_place_optimizer, which its loop calls only for an EMA codebook',
      ),
    () =>
      check(
        unmodelled === undefined || (!qinco && beams.length === 0),
        where,
        unmodelled ?? '',
        `is not supported with ${qinco ? 'implicit_neural_codebook (QINCo)' : 'beam search (beam_size or eval_beam_size over 1)'} yet: that loop computes the layers' codes itself and does not model it`,
      ),
  ])
}

export const decodeRVQ = (input: unknown, where = 'ResidualVQ'): E.Either<TesseraError, RVQConfig> =>
  pipe(decode(RVQOptions, input, where), E.chain((o) => resolveRVQ(o, where)))

const configError = (where: string, field: string, message: string) => new TesseraError('config', `${where}.${field}`, message)
