import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, prefixed, random, scoped, tensorOf } from '@tessera/core'
import { PositiveInt, decodeWith, strict } from '../config/codec.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { VQConfig } from '../vq/config.js'
import { resolveVQ, vqOptionalProps } from '../vq/config.js'
import type { VectorQuantize } from '../vq/vector-quantize.js'
import { makeVectorQuantize } from '../vq/vector-quantize.js'

/**
 * RandomProjectionQuantizer (BEST-RQ, arXiv:2202.01855): layer-normalise the input (no affine),
 * project it with frozen random matrices (one per codebook) and take the nearest code of a
 * cosine-similarity VectorQuantize with one codebook per head, always in eval mode.
 */
const { heads: _h, separate_codebook_per_head: _s, use_cosine_sim: _c, codebook_dim: _cd, ...vqRest } = vqOptionalProps

export const RPQOptions = strict(
  'RandomProjectionQuantizer',
  { dim: PositiveInt, codebook_size: PositiveInt, codebook_dim: PositiveInt },
  { num_codebooks: PositiveInt, norm: t.boolean, ...vqRest },
)

export interface RPQConfig {
  readonly dim: number
  readonly codebook_dim: number
  readonly num_codebooks: number
  readonly norm: boolean
  readonly vq: VQConfig
}

export function decodeRPQ(input: unknown, where = 'RandomProjectionQuantizer'): E.Either<TesseraError, RPQConfig> {
  return decodeWith(RPQOptions, input, where, (o) => {
    const { dim, codebook_dim, num_codebooks, norm, codebook_size, ...vqKw } = o
    const h = num_codebooks ?? 1
    return E.map((vq: VQConfig) => ({ dim, codebook_dim, num_codebooks: h, norm: norm ?? true, vq }))(
      resolveVQ(
        { ...vqKw, dim: (codebook_dim * h) as never, codebook_size, heads: h as never, use_cosine_sim: true, separate_codebook_per_head: true },
        where,
      ),
    )
  })
}

export interface RandomProjectionQuantizer extends Quantizer<RPQConfig> {
  readonly kind: 'RandomProjectionQuantizer'
  readonly vq: VectorQuantize
}

const PROJS = 'rand_projs'
const VQ = 'vq.'

export function makeRPQ(cfg: RPQConfig): RandomProjectionQuantizer {
  const W = 'RandomProjectionQuantizer'
  const { dim, codebook_dim: cd, num_codebooks: h } = cfg
  const vq = makeVectorQuantize(cfg.vq)
  const paramSpecs: Record<string, Aval> = prefixed(vq.paramSpecs, VQ)
  const stateSpecs: Record<string, Aval> = { [PROJS]: { shape: [h, dim, cd], dtype: 'float32' }, ...prefixed(vq.stateSpecs, VQ) }

  const init = (key: random.Key): Init => {
    const [kp, kv] = random.splitKey(key, 2) as [random.Key, random.Key]
    // xavier_normal_ on (h, dim, cd): fan_in = dim·cd, fan_out = h·cd
    const std = Math.sqrt(2 / (dim * cd + h * cd))
    const projs = random.normalHost(kp, h * dim * cd).map((v) => v * std)
    const v = vq.init(kv)
    return {
      params: prefixed(v.params, VQ),
      state: { [PROJS]: tensorOf(projs, [h, dim, cd]), ...prefixed(v.state, VQ) } as Record<string, HostTensor>,
    }
  }

  const project = (state: Named<Tensor>, x: Tensor): Tensor => {
    if (x.rank !== 3 || x.shape[2] !== dim) throw new TesseraError('shape', W, `input must be (b, n, ${dim}), got [${x.shape.join(',')}]`)
    const projs = state[PROJS]
    if (!projs) throw new TesseraError('input', W, `missing state entry ${PROJS}`)
    let z = x
    if (cfg.norm) {
      // nn.LayerNorm(dim, elementwise_affine=False): biased variance, eps 1e-5
      const mu = z.mean(-1, true)
      const c = z.sub(mu)
      z = c.div(c.square().mean(-1, true).add(1e-5).sqrt())
    }
    const [b, n] = x.shape as [number, number]
    // 'b n d, h d e -> b n h e', then heads packed into the feature axis
    return z.reshape([1, b * n, dim]).matmul(projs).transpose([1, 0, 2]).reshape([b, n, h * cd])
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    // the reference always runs its VectorQuantize in eval mode: no EMA, no losses
    const z = project(state, x)
    const r = vq.apply(scoped(params, VQ), scoped(state, VQ), z, { ...opts, training: false })
    // the inner VQ may change its state even in eval (k-means init until `initted`), so keep it
    return { ...r, state: { [PROJS]: state[PROJS]!, ...prefixed(r.state, VQ) }, extra: { ...r.extra, projected: z } }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor =>
    vq.indicesToCodes(scoped(params, VQ), indices, state ? scoped(state, VQ) : undefined)

  return { kind: W, config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes, vq }
}

export const randomProjectionQuantizer = (options: unknown): E.Either<TesseraError, RandomProjectionQuantizer> =>
  E.map(makeRPQ)(decodeRPQ(options))
