import * as E from 'fp-ts/lib/Either.js'
import type { Aval, Builder, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, entropy, linear, random, ranksOf, straightThrough, tensorOf, where } from '@tessera/core'
import { applyActivation } from '../common/activation.js'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { initProjection, orthogonalHost, projectOut, projectionSpecs } from '../common/projection.js'
import type { Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { LFQConfig } from './config.js'
import { decodeLFQ } from './config.js'
import type { RankSync } from '../vq/sync.js'
import { globalRanks, localRowIndex, rankSync } from '../vq/sync.js'
import type { LFQApplyOptions } from './mask.js'
import { maskedCommitment, maskedEntropy, tokenMask } from './mask.js'

export type { LFQApplyOptions, LFQForwardOptions } from './mask.js'

const f32 = Math.fround

/** mask[j] = 2^(d-1-j): dimension 0 is the most significant bit (the reference's order). */
export const lfqMask = (d: number): number[] => Array.from({ length: d }, (_, j) => 2 ** (d - 1 - j))

/** The codebook buffer: row k has +scale where bit j of k is set, -scale elsewhere. */
export function lfqCodebookHost(cfg: Pick<LFQConfig, 'codebook_size' | 'codebook_dim' | 'codebook_scale'>): HostTensor {
  const d = cfg.codebook_dim, s = cfg.codebook_scale
  const data = new Float32Array(cfg.codebook_size * d)
  const mask = lfqMask(d)
  for (let k = 0; k < cfg.codebook_size; k++)
    for (let j = 0; j < d; j++) {
      const bit = Math.floor(k / mask[j]!) % 2
      data[k * d + j] = f32(f32(f32(bit * s) * 2) - s)
    }
  return tensorOf(data, [cfg.codebook_size, d])
}

/** torch.nn.functional.softplus with its default threshold of 20. */
const softplus = (v: Tensor) => where(v.gt(20), v, v.exp().add(1).log())


export interface LFQ extends Quantizer<LFQConfig> {
  readonly kind: 'LFQ'
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: LFQApplyOptions): QuantizeResult
}

export function makeLFQ(cfg: LFQConfig): LFQ {
  const d = cfg.codebook_dim
  const cd = d * cfg.num_codebooks
  const whereName = 'LFQ'
  const cosine = cfg.cosine_sim_project_in_scale
  const proj: Projection = { present: cfg.has_projections, bias: cfg.projection_has_bias, dim: cfg.dim, codebookDims: cd }

  const paramSpecs: Record<string, Aval> = projectionSpecs(proj)
  if (proj.present && cosine !== null) {
    // CosineSimLinear: weight (dim_in, dim_out), no bias
    paramSpecs['project_in.weight'] = { shape: [cfg.dim, cd], dtype: 'float32' }
    delete paramSpecs['project_in.bias']
  }
  const stateSpecs: Record<string, Aval> = {
    mask: { shape: [d], dtype: 'int32' },
    codebook: { shape: [cfg.codebook_size, d], dtype: 'float32' },
  }
  if (cfg.orthogonal_rotation) stateSpecs['orthogonal_rot'] = { shape: [d, d], dtype: 'float32' }

  const maybeL2 = (t: Tensor) => (cfg.spherical ? t.l2Normalize(-1).mul(cfg.codebook_scale) : t)
  const maskConst = (t: Tensor) => t.builder.constant(lfqMask(d), [d], 'int32')

  const projectIn = (params: Named<Tensor>, x: Tensor): Tensor => {
    if (!proj.present) return x
    const w = params['project_in.weight']!
    if (cosine !== null) return x.l2Normalize(-1).matmul(w.div(w.square().sum(0, true).sqrt().maximum(1e-12))).mul(cosine)
    return linear(x, { weight: w, bias: proj.bias ? params['project_in.bias'] : undefined })
  }

  const init = (key: random.Key): Init => {
    const [kp, kr, kc] = random.splitKey(key, 3) as [random.Key, random.Key, random.Key]
    const params: Record<string, HostTensor> = initProjection(proj, kp)
    if (proj.present && cosine !== null) {
      params['project_in.weight'] = tensorOf(random.normalHost(kc, cfg.dim * cd), [cfg.dim, cd])
      delete params['project_in.bias']
    }
    const state: Record<string, HostTensor> = { mask: tensorOf(lfqMask(d), [d], 'int32'), codebook: lfqCodebookHost(cfg) }
    if (cfg.orthogonal_rotation) state['orthogonal_rot'] = orthogonalHost(kr, d)
    return { params, state }
  }

  /** How many of `nTok` tokens frac_per_sample_entropy < 1 samples (the reference's `int(num_tokens * frac)`). */
  const sampledCount = (nTok: number): number => {
    const k = Math.floor(nTok * cfg.frac_per_sample_entropy)
    if (k < 1)
      throw new TesseraError('input', `${whereName}.frac_per_sample_entropy`, `${cfg.frac_per_sample_entropy} of ${nTok} tokens selects none`)
    return k
  }
  const sampleKey = (key: Tensor | undefined): Tensor => {
    if (!key) throw new TesseraError('input', `${whereName}.frac_per_sample_entropy`, 'training with frac_per_sample_entropy < 1 needs a random key (opts.key)')
    return key
  }

  /**
   * The token subset for frac_per_sample_entropy < 1: k of the tokens without replacement, uniformly
   * (the reference keeps the tokens whose rank in a random permutation is below k): ranks of a
   * uniform draw, first `k` ranks kept.
   */
  const sampleTokens = (flat: Tensor, key: Tensor | undefined): Tensor => {
    const nTok = flat.shape[0]!
    const k = sampledCount(nTok)
    const b = flat.builder
    const rank = ranksOf(b.randomUniform(sampleKey(key), [nTok])) // (nTok,), exact integers in float32
    const slot = b.iota([k, 1], 0).cast('float32')
    const pick = rank.reshape([1, nTok]).eq(slot).cast('int32').argmax(1) // token holding rank s
    return flat.gather(pick, 0)
  }

  /**
   * The same subset drawn over the global batch when synced: the shared key's draw over every
   * rank's tokens, k = int(global tokens · frac); this rank's tokens whose global rank is below k
   * are its part of the subset (bool (nTok), any count from 0 to k). Returns the mask and k.
   */
  const sampleTokensSynced = (nTok: number, key: Tensor | undefined, sync: RankSync, b: Builder): { selected: Tensor; k: number } => {
    const total = nTok * sync.size
    const k = sampledCount(total)
    const u = b.randomUniform(sampleKey(key), [total])
    return { selected: globalRanks(u, localRowIndex(sync, nTok)).lt(k), k }
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: LFQApplyOptions): QuantizeResult => {
    const sync = rankSync(opts.world, x.builder, whereName)
    const transpose = cfg.channel_first ?? x.rank >= 4
    const layout = packLayout(x, transpose, cfg.dim, whereName)
    const [bsz, n] = layout.x.shape as [number, number]
    const keep = tokenMask(opts.mask, [bsz, n], x, whereName) // (b, n) bool; outputs stay unmasked, as in the reference
    const projected = projectIn(params, layout.x)
    let h = projected
    const sc = cfg.soft_clamp_input_value
    if (sc !== null) h = h.div(sc).tanh().mul(sc)
    let z = h.reshape([bsz, n, cfg.num_codebooks, d])
    const rot = cfg.orthogonal_rotation ? state['orthogonal_rot']! : undefined
    if (rot) z = z.matmul(rot)
    z = maybeL2(z)
    const original = z
    const positive = z.gt(0)
    let quantized = where(positive, cfg.codebook_scale, -cfg.codebook_scale)
    const indices = where(positive, maskConst(z), 0).sum(-1) // (b, n, c) int32
    quantized = maybeL2(quantized)
    // the activation shapes the gradient; the value is act(z) + (code - act(z)), the code up to float32 rounding, as in the reference
    const out4 = opts.training ? straightThrough(applyActivation(cfg.straight_through_activation, z, `${whereName}.straight_through_activation`), quantized) : quantized

    const b = x.builder
    const zero = b.scalar(0)
    let perSample = zero, batchEntropy = zero, entropyAux = zero, commit = zero
    if (opts.training) {
      const codebook = maybeL2(state['codebook']!)
      let flat = original.reshape([bsz * n, cfg.num_codebooks, d])
      const subset = cfg.frac_per_sample_entropy < 1 && sync && !keep ? sampleTokensSynced(bsz * n, opts.key, sync, b) : undefined
      if (cfg.frac_per_sample_entropy < 1 && !sync && !keep) flat = sampleTokens(flat, opts.key)
      const distance = flat.matmul(codebook.mT).mul(-2)
      const prob = distance.neg().mul(cfg.inv_temperature).softmax(-1) // (tokens, c, K)
      if (keep) {
        // the terms over the kept tokens (and their sampled subset), counted over every rank with a world
        ;({ perSample, batchEntropy } = maskedEntropy(prob, keep.reshape([bsz * n]), cfg.frac_per_sample_entropy, opts.key, sync))
      } else if (subset) {
        // synced subset: sums over this rank's sampled tokens. The per-sample entropy is the rank's
        // sum over its equal share (k / ranks) of the k tokens, so its mean over ranks is the one-process
        // mean; the batch probabilities are summed over the ranks and divided by k
        const sel = subset.selected.expandDims(-1)
        perSample = where(sel, entropy(prob), 0).sum().div(f32((subset.k * cfg.num_codebooks) / sync!.size))
        batchEntropy = entropy(where(sel.expandDims(-1), prob, 0).sum(0).allReduce('sum').div(subset.k)).mean()
      } else {
        perSample = entropy(prob).mean()
        // distributed: the batch-averaged probabilities are averaged over the ranks' equal shards
        // (the reference's maybe_distributed_mean means to; its dist_nn.all_reduce result is dropped)
        const avgProb = prob.mean(0)
        batchEntropy = entropy(sync ? avgProb.allReduce('mean') : avgProb).mean()
      }
      entropyAux = perSample.sub(batchEntropy.mul(cfg.diversity_gamma))
      if (cfg.experimental_softplus_entropy_loss) entropyAux = softplus(entropyAux.add(cfg.entropy_loss_offset))
      if (cfg.commitment_loss_weight > 0) {
        const sq = original.sub(quantized.stopGradient()).square()
        commit = keep ? maskedCommitment(sq, keep, sync) : sq.mean()
      }
    }
    const loss = entropyAux.mul(cfg.entropy_loss_weight).add(commit.mul(cfg.commitment_loss_weight))

    let o = out4
    if (rot) o = o.matmul(rot.mT)
    const flatOut = o.reshape([bsz, n, cd])
    const out = projectOut(proj, params, flatOut)
    let idx = layout.unpackTokens(indices)
    if (!cfg.keep_num_codebooks_dim) idx = idx.squeeze(-1)
    return {
      quantized: layout.unpack(out),
      indices: idx,
      loss,
      losses: { per_sample_entropy: perSample, batch_entropy: batchEntropy, commitment: commit, entropy_aux_loss: entropyAux },
      state,
      extra: { codes: flatOut, projected },
    }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${whereName}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    const isImage = indices.rank >= 3 + (cfg.keep_num_codebooks_dim ? 1 : 0)
    const transpose = cfg.channel_first ?? isImage
    const idx = cfg.keep_num_codebooks_dim ? indices : indices.expandDims(-1)
    // bit j of an index (two's complement, so -1 gives all ones as torch's `&` does)
    const bits = idx.expandDims(-1).idiv(maskConst(idx)).mod(2).cast('float32')
    let codes = maybeL2(bits.mul(cfg.codebook_scale).mul(2).sub(cfg.codebook_scale))
    if (cfg.orthogonal_rotation) {
      const rot = state?.['orthogonal_rot']
      if (!rot) throw new TesseraError('input', `${whereName}.indicesToCodes`, 'orthogonal_rotation needs the state (orthogonal_rot)')
      codes = codes.matmul(rot.mT)
    }
    codes = codes.reshape([...codes.shape.slice(0, -2), cd])
    codes = projectOut(proj, params, codes)
    return transpose ? codes.moveAxis(-1, 1) : codes
  }

  return { kind: 'LFQ', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes }
}

export const lfq = (options: unknown): E.Either<TesseraError, LFQ> => E.map(makeLFQ)(decodeLFQ(options))
