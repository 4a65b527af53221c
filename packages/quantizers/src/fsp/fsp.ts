import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random, straightThrough, tensorOf, where } from '@tessera/core'
import type { Projection } from '../common/projection.js'
import { initProjection, projectIn, projectOut, projectionSpecs } from '../common/projection.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { FSPActivation, FSPConfig, VectorNormConfig } from './config.js'
import { decodeFSP } from './config.js'
import { atan, erf, erfinv, tan } from './special.js'

/** float32 machine epsilon: the reference's default forward `eps` (torch.finfo(float32).eps). */
const F32_EPS = 2 ** -23
/** The clamp of indices_to_codes before an inverse activation (the reference's default there). */
const DECODE_EPS = 1e-6
/** 1/sqrt(12), the standard deviation of the uniform [0, 1]: dividing by it gives codes of variance ~1. */
const UNIFORM_STD = 0.28867513459481287

/** CDF activation (-inf, inf) -> [0, 1], as the reference's registry defines it. */
export function cdfAct(name: FSPActivation, z: Tensor): Tensor {
  switch (name) {
    case 'tanh':
      return z.tanh().add(1).div(2)
    case 'sigmoid':
      return z.sigmoid()
    case 'laplace':
      return z.sign().mul(z.abs().neg().exp().rsub(1)).add(1).mul(0.5)
    case 'normal':
      return erf(z.div(Math.SQRT2)).add(1).div(2)
    case 'cauchy':
      return atan(z).div(Math.PI).add(0.5)
  }
}

/** Inverse CDF activation (0, 1) -> (-inf, inf). */
export function cdfInvAct(name: FSPActivation, p: Tensor): Tensor {
  switch (name) {
    case 'tanh':
      return p.mul(2).sub(1).atanh()
    case 'sigmoid':
      return p.div(p.rsub(1)).log() // torch.logit
    case 'laplace': {
      const c = p.sub(0.5)
      return c.sign().neg().mul(c.abs().mul(2).rsub(1).log())
    }
    case 'normal':
      return erfinv(p.mul(2).sub(1)).mul(Math.SQRT2)
    case 'cauchy':
      return tan(p.sub(0.5).mul(Math.PI))
  }
}

/**
 * The reference's VectorNorm over rows of z (N, d): per-dimension mean, unbiased variance,
 * skewness and excess kurtosis, and the weighted squared distance of each from its target.
 * With one row the unbiased variance is 0/0 = NaN, as in torch.
 */
export function vectorNorm(z: Tensor, c: VectorNormConfig): { loss: Tensor; mean: Tensor; variance: Tensor; skewness: Tensor; kurtosis: Tensor } {
  const rows = z.shape[0]!
  const mean = z.mean(0)
  const centred = z.sub(mean)
  const variance = centred.square().sum(0).div(rows - 1)
  const std = variance.sqrt().maximum(c.eps)
  const zs = centred.div(std)
  const skewness = zs.square().mul(zs).mean(0)
  const kurtosis = zs.square().square().mean(0).sub(3)
  const term = (v: Tensor, target: number, weight: number) => v.sub(target).square().mean().mul(weight)
  const loss = term(mean, c.l1_target, c.l1_weight)
    .add(term(variance, c.l2_target, c.l2_weight))
    .add(term(skewness, c.l3_target, c.l3_weight))
    .add(term(kurtosis, c.l4_target, c.l4_weight))
  return { loss, mean, variance, skewness, kurtosis }
}

export interface FSP extends Quantizer<FSPConfig> {
  readonly kind: 'FSP'
  /** int32 indices (...) -> per-dimension level indices (..., codebook_dim), int32 (dimension 0 least significant). */
  indicesToLevelIndices(indices: Tensor): Tensor
}

/**
 * Finite scalar perturbation (arXiv 2602.17133): each scalar goes through a CDF activation into
 * [0, 1] and is quantized to the midpoint of one of L equal bins. In training, with
 * `quantize_rate < 1`, a fraction of the values is replaced by a random point of its own bin
 * (kept only where it stays in (0, 1)), which needs `opts.key`. The VectorNorm loss on the
 * pre-activation values is computed in every mode, as in the reference.
 */
export function makeFSP(cfg: FSPConfig): FSP {
  const d = cfg.codebook_dim
  const where_ = 'FSP'
  const basis: number[] = []
  cfg.levels.reduce((acc, l) => (basis.push(acc), acc * l), 1)
  const proj: Projection = { present: cfg.has_projections, bias: cfg.projection_has_bias, dim: cfg.dim, codebookDims: d }

  const paramSpecs: Record<string, Aval> = projectionSpecs(proj)
  const stateSpecs: Record<string, Aval> = {
    _levels: { shape: [d], dtype: 'int32' },
    _basis: { shape: [d], dtype: 'int32' },
  }
  const vec = (t: Tensor, data: readonly number[], dtype: 'float32' | 'int32' = 'float32') => t.builder.constant(data, [d], dtype)

  // bin midpoints (level + 1/2) / L back to values: the inverse activation, or the affine map that
  // gives the uniform bins variance ~1 (the reference's default)
  const fromActValue = (q: Tensor, eps: number): Tensor =>
    cfg.need_inv_act ? cdfInvAct(cfg.act_name, q.clamp(eps, 1 - eps)) : q.sub(0.5).div(UNIFORM_STD)

  const indicesToLevelIndices = (indices: Tensor): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${where_}.indicesToLevelIndices`, `indices must be int32, got ${indices.dtype}`)
    return indices.expandDims(-1).idiv(vec(indices, basis, 'int32')).mod(vec(indices, cfg.levels, 'int32'))
  }

  const init = (key: random.Key): Init => ({
    params: initProjection(proj, key),
    state: { _levels: tensorOf(cfg.levels, [d], 'int32'), _basis: tensorOf(basis, [d], 'int32') } as Record<string, HostTensor>,
  })

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    const minRank = cfg.channel_first ? 3 : 2
    if (x.rank < minRank) throw new TesseraError('shape', where_, `input needs rank >= ${minRank}, got [${x.shape.join(',')}]`)
    const zIn = cfg.channel_first ? x.moveAxis(1, -1) : x
    const zShape = zIn.shape
    if (zShape[zShape.length - 1] !== cfg.dim)
      throw new TesseraError('shape', where_, `input has ${zShape[zShape.length - 1]} features; expected dim ${cfg.dim}`)
    const lead = zShape.slice(0, -1)
    const z = projectIn(proj, params, zIn.reshape([-1, cfg.dim]))
    const stats = vectorNorm(z, cfg.norm)
    const levels = vec(z, cfg.levels)
    const act = cdfAct(cfg.act_name, z)
    const level = act.minimum(1 - F32_EPS).mul(levels).floor()
    let qAct = straightThrough(act, level.add(0.5).div(levels))
    const extra: Record<string, Tensor> = {}
    const rate = opts.training ? cfg.quantize_rate : 1
    if (rate < 1) {
      if (!opts.key) throw new TesseraError('input', `${where_}.quantize_rate`, 'training with quantize_rate < 1 needs a random key (opts.key)')
      const u = z.builder.randomUniform(opts.key, [2, ...act.shape])
      // a uniform offset within half a bin either way; kept only where it stays inside (0, 1)
      const proposal = act.add(u.index(0, 0).mul(2).sub(1).div(levels.mul(2)))
      const accept = proposal.gt(0).and(proposal.lt(1))
      extra['p_accept_prob'] = accept.cast('float32').mean()
      const perturbed = where(accept, proposal, act)
      qAct = where(u.index(0, 1).gt(rate), perturbed, qAct)
    }
    let qz = fromActValue(qAct, F32_EPS)
    if (cfg.need_inv_act) qz = straightThrough(z, qz)
    const indices = level.mul(vec(z, basis)).sum(-1).cast('int32').reshape(lead)
    let out = projectOut(proj, params, qz).reshape(zShape)
    if (cfg.channel_first) out = out.moveAxis(-1, 1)
    Object.assign(extra, {
      projected: z,
      level_indices: level.reshape([...lead, d]),
      'norm_info.mean': stats.mean,
      'norm_info.variance': stats.variance,
      'norm_info.skewness': stats.skewness,
      'norm_info.kurtosis': stats.kurtosis,
    })
    return { quantized: out, indices, loss: stats.loss, losses: { norm_loss: stats.loss }, state, extra }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor): Tensor => {
    const level = indicesToLevelIndices(indices).cast('float32')
    const codes = projectOut(proj, params, fromActValue(level.add(0.5).div(vec(level, cfg.levels)), DECODE_EPS))
    return cfg.channel_first ? codes.moveAxis(-1, 1) : codes
  }

  return { kind: 'FSP', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes, indicesToLevelIndices }
}

/** Build an FSP from the reference's keyword arguments; a bad config is a Left naming the field. */
export const fsp = (options: unknown): E.Either<TesseraError, FSP> => E.map(makeFSP)(decodeFSP(options))
