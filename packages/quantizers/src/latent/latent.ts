import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random, stack, straightThrough, tensorOf } from '@tessera/core'
import { Finite, PositiveInt, check, checks, decodeWith, strict } from '../config/codec.js'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { initProjection, projectIn, projectOut, projectionSpecs } from '../common/projection.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'

export const LatentQuantizeOptions = strict(
  'LatentQuantize',
  { levels: t.union([PositiveInt, t.array(PositiveInt)]), dim: PositiveInt },
  {
    commitment_loss_weight: t.union([Finite, t.null]),
    quantization_loss_weight: t.union([Finite, t.null]),
    num_codebooks: PositiveInt,
    codebook_dim: t.Int,
    keep_num_codebooks_dim: t.union([t.boolean, t.null]),
    optimize_values: t.union([t.boolean, t.null]),
  },
)

export interface LatentQuantizeConfig {
  readonly levels: readonly number[]
  readonly dim: number
  readonly commitment_loss_weight: number
  readonly quantization_loss_weight: number
  readonly num_codebooks: number
  readonly codebook_dim: number
  readonly keep_num_codebooks_dim: boolean
  readonly optimize_values: boolean
  readonly codebook_size: number
}

export function decodeLatentQuantize(input: unknown, where = 'LatentQuantize'): E.Either<TesseraError, LatentQuantizeConfig> {
  return decodeWith(LatentQuantizeOptions, input, where, (o) => {
    const givenCd = o.codebook_dim ?? -1
    const levels: number[] = typeof o.levels === 'number' ? Array.from({ length: Math.max(givenCd, 0) }, () => o.levels as number) : [...o.levels]
    const nc = o.num_codebooks ?? 1
    const size = levels.reduce((a, b) => a * b, 1)
    return checks<LatentQuantizeConfig>(
      {
        levels,
        dim: o.dim,
        commitment_loss_weight: o.commitment_loss_weight ?? 0.1,
        quantization_loss_weight: o.quantization_loss_weight ?? 0.1,
        num_codebooks: nc,
        codebook_dim: levels.length,
        // the reference keeps the codebook axis whenever there is more than one codebook
        keep_num_codebooks_dim: (o.keep_num_codebooks_dim ?? false) || nc > 1,
        optimize_values: o.optimize_values ?? true,
        codebook_size: size,
      },
      [
        () => check(typeof o.levels !== 'number' || givenCd > 0, where, 'codebook_dim', 'a single int `levels` needs codebook_dim > 0'),
        () => check(typeof o.levels === 'number' || givenCd <= 0 || givenCd === levels.length, where, 'codebook_dim', `must equal the number of levels (${levels.length})`),
        () => check(levels.length > 0 && levels.every((l) => l >= 2), where, 'levels', `every level must be >= 2, got [${levels.join(', ')}]`),
        () => check(size <= 2 ** 24, where, 'levels', `the codebook size ${size} exceeds 2^24`),
      ],
    )
  })
}

const f32 = Math.fround

/**
 * The per-dimension values: linspace(-0.5, 0.5, L) for odd L, arange(L)/L - 0.5 for even L.
 * torch's float32 linspace fills the first half from the start and the rest from the end, each as
 * one multiply-add rounded once (x86-64 builds contract it into an FMA): for L = 7 the middle value
 * is 0.5 - 3·f32(1/6) = -1.49e-8, not 0 (test/latent-reference.test.ts). The product of a float32
 * and a small integer and its sum with ±0.5 are exact in float64, so one fround is that rounding.
 */
export function latentValues(L: number): number[] {
  if (L % 2 === 0) return Array.from({ length: L }, (_, i) => f32(f32(i / L) - 0.5))
  const step = f32(1 / (L - 1))
  const half = Math.floor(L / 2)
  return Array.from({ length: L }, (_, i) => (i < half ? f32(-0.5 + step * i) : f32(0.5 - step * (L - 1 - i))))
}

export interface LatentQuantize extends Quantizer<LatentQuantizeConfig> {
  readonly kind: 'LatentQuantize'
}

export function makeLatentQuantize(cfg: LatentQuantizeConfig): LatentQuantize {
  const L = cfg.levels
  const d = cfg.codebook_dim
  const E_ = d * cfg.num_codebooks
  const basis: number[] = []
  L.reduce((acc, l) => (basis.push(acc), acc * l), 1)
  const hw = L.map((l) => Math.floor(l / 2))
  const proj: Projection = { present: cfg.dim !== E_, bias: true, dim: cfg.dim, codebookDims: E_ }
  const valueNames = L.map((_, i) => `values_per_latent.${i}`)

  const paramSpecs: Record<string, Aval> = projectionSpecs(proj)
  const stateSpecs: Record<string, Aval> = {
    _levels: { shape: [d], dtype: 'int32' },
    _basis: { shape: [d], dtype: 'int32' },
    implicit_codebook: { shape: [cfg.codebook_size, d], dtype: 'float32' },
    commitment_loss_weight: { shape: [], dtype: 'float32' },
    quantization_loss_weight: { shape: [], dtype: 'float32' },
  }
  // learnable values are parameters; otherwise plain constants carried as state
  const valueTarget = cfg.optimize_values ? paramSpecs : stateSpecs
  L.forEach((l, i) => (valueTarget[valueNames[i]!] = { shape: [l], dtype: 'float32' }))

  const levelToCode = (lv: number, i: number) => f32(f32((lv - hw[i]!) / hw[i]!) / 2)

  const init = (key: random.Key): Init => {
    const params: Record<string, HostTensor> = initProjection(proj, key)
    const cb = new Float32Array(cfg.codebook_size * d)
    for (let k = 0; k < cfg.codebook_size; k++) for (let i = 0; i < d; i++) cb[k * d + i] = levelToCode(Math.floor(k / basis[i]!) % L[i]!, i)
    const state: Record<string, HostTensor> = {
      _levels: tensorOf(L, [d], 'int32'),
      _basis: tensorOf(basis, [d], 'int32'),
      implicit_codebook: tensorOf(cb, [cfg.codebook_size, d]),
      commitment_loss_weight: tensorOf([cfg.commitment_loss_weight], []),
      quantization_loss_weight: tensorOf([cfg.quantization_loss_weight], []),
    }
    const values = cfg.optimize_values ? params : state
    L.forEach((l, i) => (values[valueNames[i]!] = tensorOf(latentValues(l), [l])))
    return { params, state }
  }

  const vec = (t: Tensor, data: readonly number[], dtype: 'float32' | 'int32' = 'float32') => t.builder.constant(data, [d], dtype)

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    // LatentQuantize is always channel-first, (b, dim, ...)
    const layout = packLayout(x, true, cfg.dim, 'LatentQuantize')
    const [b, n] = layout.x.shape as [number, number]
    const projected = projectIn(proj, params, layout.x)
    const z = projected.reshape([b, n, cfg.num_codebooks, d])
    const values = (i: number) => (cfg.optimize_values ? params : state)[valueNames[i]!]!
    const picked = L.map((_, i) => {
      const zi = z.index(-1, i)
      const vi = values(i)
      const idx = zi.expandDims(-1).sub(vi).abs().argmin(-1)
      return vi.gather(idx, 0)
    })
    const q = stack(picked, -1)
    const codes = straightThrough(z, q)
    const scaled = codes.mul(2).mul(vec(z, hw)).add(vec(z, hw))
    const indices = scaled.mul(vec(z, basis)).sum(-1).cast('int32') // truncation, as the reference's .to(int32)
    const flat = codes.reshape([b, n, E_])
    const out = layout.unpack(projectOut(proj, params, flat))
    let idx = layout.unpackTokens(indices)
    if (!cfg.keep_num_codebooks_dim) idx = idx.squeeze(-1)
    const zero = x.builder.scalar(0)
    let commitment = zero, quantization = zero
    if (opts.training) {
      // as the reference: mse(x.detach(), out) and mse(out.detach(), x), one value with different gradients
      if (cfg.commitment_loss_weight !== 0) commitment = out.sub(x.stopGradient()).square().mean()
      if (cfg.quantization_loss_weight !== 0) quantization = out.stopGradient().sub(x).square().mean()
    }
    const loss = state['commitment_loss_weight']!.mul(commitment).add(state['quantization_loss_weight']!.mul(quantization))
    return { quantized: out, indices: idx, loss, losses: { commitment, quantization }, state, extra: { codes: flat, projected } }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', 'LatentQuantize.indicesToCodes', `indices must be int32, got ${indices.dtype}`)
    const lv = indices.expandDims(-1).idiv(vec(indices, basis, 'int32')).mod(vec(indices, L, 'int32'))
    let codes = lv.sub(vec(indices, hw, 'int32')).cast('float32').div(vec(indices, hw)).div(2)
    if (cfg.keep_num_codebooks_dim) codes = codes.reshape([...codes.shape.slice(0, -2), E_])
    return projectOut(proj, params, codes).moveAxis(-1, 1)
  }

  return { kind: 'LatentQuantize', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes }
}

export const latentQuantize = (options: unknown): E.Either<TesseraError, LatentQuantize> => E.map(makeLatentQuantize)(decodeLatentQuantize(options))
