import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random, straightThrough, tensorOf, where } from '@tessera/core'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { initProjection, orthogonalHost, projectIn, projectOut, projectionSpecs } from '../common/projection.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { FSQConfig } from './config.js'
import { decodeFSQ } from './config.js'

const f32 = Math.fround

/**
 * The per-dimension float32 constants of FSQ's bound, computed once on the host exactly as torch
 * computes them from the int32 `_levels` buffer (each op rounded to float32).
 */
export interface FSQConstants {
  readonly levels: readonly number[]
  readonly basis: readonly number[]
  readonly halfL: readonly number[]
  readonly offset: readonly number[]
  readonly shift: readonly number[]
  readonly halfWidth: readonly number[]
  readonly levelsMinus1: readonly number[]
  /** 2 / (L - 1), the step of the symmetric code grid */
  readonly symStep: readonly number[]
}

export function fsqConstants(cfg: Pick<FSQConfig, 'levels' | 'bound_hard_clamp'>): FSQConstants {
  const L = cfg.levels
  const basis: number[] = []
  L.reduce((acc, l) => (basis.push(acc), acc * l), 1)
  const halfL = L.map((l) => f32(f32((l - 1) * f32(1.001)) / 2))
  const offset = L.map((l) => (l % 2 === 0 ? 0.5 : 0))
  const shift = L.map((_, i) => {
    const r = f32(offset[i]! / halfL[i]!)
    return cfg.bound_hard_clamp ? r : f32(Math.atanh(r))
  })
  return {
    levels: L,
    basis,
    halfL,
    offset,
    shift,
    halfWidth: L.map((l) => Math.floor(l / 2)),
    levelsMinus1: L.map((l) => l - 1),
    symStep: L.map((l) => f32(2 / (l - 1))),
  }
}

/** Round with straight-through gradients (the reference's `round_ste`); x + (round(x) - x) is round(x) exactly. */
export const roundSte = (x: Tensor): Tensor => straightThrough(x, x.round())

/** Floor with straight-through gradients (the reference's `floor_ste`). */
export const floorSte = (x: Tensor): Tensor => straightThrough(x, x.floor())

const perDim = (z: Tensor, data: readonly number[]): Tensor => z.builder.constant(data, [data.length], 'float32')

/**
 * The reference's `bound`: squash z (..., d) so that rounding gives L levels per dimension,
 * tanh(z + shift) * halfL - offset (clamp instead of tanh with `bound_hard_clamp`). halfL is
 * (L - 1)(1 + 1e-3) / 2; for even L the offset of 1/2 and its matching shift put 0 between levels.
 */
export function bound(z: Tensor, c: FSQConstants, hardClamp: boolean): Tensor {
  const s = z.add(perDim(z, c.shift))
  return (hardClamp ? s.clamp(-1, 1) : s.tanh()).mul(perDim(z, c.halfL)).sub(perDim(z, c.offset))
}

/**
 * The reference's `symmetry_preserving_bound` (with `preserve_symmetry`): L levels spread evenly
 * over [-1, 1], symmetric about 0 for every L, so q(-z) = -q(z). Returns codes, already quantized.
 */
export function symmetryPreservingBound(z: Tensor, c: FSQConstants, hardClamp: boolean): Tensor {
  const t = hardClamp ? z.clamp(-1, 1) : z.tanh()
  const bracket = t.add(1).mul(perDim(z, c.levelsMinus1)).div(2).add(0.5)
  return floorSte(bracket).mul(perDim(z, c.symStep)).sub(1)
}

/** Level index -> code in [-1, 1] on the host, with the reference's float32 rounding. */
function levelToCodeHost(c: FSQConstants, preserve: boolean, i: number, lv: number): number {
  return preserve ? f32(f32(lv * c.symStep[i]!) - 1) : f32((lv - c.halfWidth[i]!) / c.halfWidth[i]!)
}

export function implicitCodebookHost(cfg: FSQConfig): HostTensor {
  const c = fsqConstants(cfg)
  const d = cfg.codebook_dim
  const data = new Float32Array(cfg.codebook_size * d)
  for (let k = 0; k < cfg.codebook_size; k++)
    for (let i = 0; i < d; i++) {
      const lv = Math.floor(k / c.basis[i]!) % c.levels[i]!
      data[k * d + i] = levelToCodeHost(c, cfg.preserve_symmetry, i, lv)
    }
  return tensorOf(data, [cfg.codebook_size, d])
}

export interface FSQ extends Quantizer<FSQConfig> {
  readonly kind: 'FSQ'
  /** Bound and round `z` (..., codebook_dim) to codes in [-1, 1] (no projection, no noise). */
  quantizeCodes(z: Tensor): Tensor
  /** codes (..., codebook_dim) -> int32 indices (...): dimension 0 is the least significant digit. */
  codesToIndices(codes: Tensor): Tensor
  /** int32 indices (...) -> per-dimension level indices (..., codebook_dim) in [0, L-1]. */
  indicesToLevelIndices(indices: Tensor): Tensor
  /** int32 indices (...) -> codes (..., codebook_dim), without rotation or projection. */
  indicesToRawCodes(indices: Tensor): Tensor
}

const projectionOf = (cfg: FSQConfig): Projection => ({
  present: cfg.has_projections,
  bias: cfg.projection_has_bias,
  dim: cfg.dim,
  codebookDims: cfg.codebook_dim * cfg.num_codebooks,
})

export function makeFSQ(cfg: FSQConfig): FSQ {
  const c = fsqConstants(cfg)
  const d = cfg.codebook_dim
  const proj = projectionOf(cfg)
  const where_ = 'FSQ'

  const paramSpecs: Record<string, Aval> = projectionSpecs(proj)
  const stateSpecs: Record<string, Aval> = {
    _levels: { shape: [d], dtype: 'int32' },
    _basis: { shape: [d], dtype: 'int32' },
  }
  if (cfg.return_indices) stateSpecs['implicit_codebook'] = { shape: [cfg.codebook_size, d], dtype: 'float32' }
  if (cfg.orthogonal_rotation) stateSpecs['orthogonal_rot'] = { shape: [d, d], dtype: 'float32' }

  const vec = (t: Tensor, data: readonly number[], dtype: 'float32' | 'int32' = 'float32') => t.builder.constant(data, [d], dtype)

  const quantizeCodes = (z: Tensor): Tensor => {
    if (z.shape[z.rank - 1] !== d)
      throw new TesseraError('shape', `${where_}.quantize`, `codes need last dimension ${d}, got [${z.shape.join(',')}]`)
    if (cfg.preserve_symmetry) return symmetryPreservingBound(z, c, cfg.bound_hard_clamp)
    return roundSte(bound(z, c, cfg.bound_hard_clamp)).div(vec(z, c.halfWidth))
  }

  const codesToIndices = (codes: Tensor): Tensor => {
    if (codes.shape[codes.rank - 1] !== d)
      throw new TesseraError('shape', `${where_}.codesToIndices`, `codes need last dimension ${d}, got [${codes.shape.join(',')}]`)
    const hw = vec(codes, c.halfWidth)
    const shifted = cfg.preserve_symmetry ? codes.add(1).div(vec(codes, c.symStep)) : codes.mul(hw).add(hw)
    return shifted.mul(vec(codes, c.basis)).sum(-1).round().cast('int32')
  }

  const checkIndices = (indices: Tensor, op: string) => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${where_}.${op}`, `indices must be int32, got ${indices.dtype}`)
  }

  const indicesToLevelIndices = (indices: Tensor): Tensor => {
    checkIndices(indices, 'indicesToLevelIndices')
    return indices.expandDims(-1).idiv(vec(indices, c.basis, 'int32')).mod(vec(indices, c.levels, 'int32'))
  }

  const indicesToRawCodes = (indices: Tensor): Tensor => {
    const lv = indicesToLevelIndices(indices)
    if (cfg.preserve_symmetry) return lv.cast('float32').mul(vec(indices, c.symStep)).sub(1)
    return lv.sub(vec(indices, c.halfWidth, 'int32')).cast('float32').div(vec(indices, c.halfWidth))
  }

  const init = (key: random.Key): Init => {
    const [kp, kr] = random.splitKey(key, 2) as [random.Key, random.Key]
    const state: Record<string, HostTensor> = {
      _levels: tensorOf(c.levels, [d], 'int32'),
      _basis: tensorOf(c.basis, [d], 'int32'),
    }
    if (cfg.return_indices) state['implicit_codebook'] = implicitCodebookHost(cfg)
    if (cfg.orthogonal_rotation) state['orthogonal_rot'] = orthogonalHost(kr, d)
    return { params: initProjection(proj, kp), state }
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    const layout = packLayout(x, cfg.channel_first || x.rank >= 4, cfg.dim, where_)
    const [b, n] = layout.x.shape as [number, number]
    const projected = projectIn(proj, params, layout.x)
    let z = projected.reshape([b, n, cfg.num_codebooks, d])
    const rot = cfg.orthogonal_rotation ? state['orthogonal_rot']! : undefined
    if (rot) z = z.matmul(rot)
    let codes = quantizeCodes(z)
    const indices = codesToIndices(codes)
    if (opts.training && cfg.noise_dropout > 0) {
      if (!opts.key) throw new TesseraError('input', `${where_}.noise_dropout`, 'training with noise_dropout > 0 needs a random key (opts.key)')
      const u = z.builder.randomUniform(opts.key, [2, ...codes.shape])
      const mask = u.index(0, 0).lt(cfg.noise_dropout)
      codes = where(mask, codes.add(u.index(0, 1).sub(0.5)), codes).clamp(-1, 1)
    }
    if (rot) codes = codes.matmul(rot.mT)
    const flat = codes.reshape([b, n, cfg.num_codebooks * d])
    const out = projectOut(proj, params, flat)
    let idx = layout.unpackTokens(indices)
    if (!cfg.keep_num_codebooks_dim) idx = idx.squeeze(-1)
    const zero = x.builder.scalar(0)
    return { quantized: layout.unpack(out), indices: idx, loss: zero, losses: {}, state, extra: { codes: flat, projected } }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    const isImage = indices.rank >= 3 + (cfg.keep_num_codebooks_dim ? 1 : 0)
    let codes = indicesToRawCodes(indices)
    if (cfg.orthogonal_rotation) {
      const rot = state?.['orthogonal_rot']
      if (!rot) throw new TesseraError('input', `${where_}.indicesToCodes`, 'orthogonal_rotation needs the state (orthogonal_rot)')
      codes = codes.matmul(rot.mT)
    }
    if (cfg.keep_num_codebooks_dim) codes = codes.reshape([...codes.shape.slice(0, -2), cfg.num_codebooks * d])
    codes = projectOut(proj, params, codes)
    return isImage || cfg.channel_first ? codes.moveAxis(-1, 1) : codes
  }

  return {
    kind: 'FSQ',
    config: cfg,
    paramSpecs,
    stateSpecs,
    init,
    apply,
    indicesToCodes,
    quantizeCodes,
    codesToIndices,
    indicesToLevelIndices,
    indicesToRawCodes,
  }
}

/** Build an FSQ from the reference's keyword arguments; a bad config is a Left naming the field. */
export const fsq = (options: unknown): E.Either<TesseraError, FSQ> => E.map(makeFSQ)(decodeFSQ(options))
