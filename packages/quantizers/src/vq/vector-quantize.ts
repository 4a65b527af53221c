import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, entropy, foldKey, random, ranksOf, tensorOf, where, zerosHost } from '@tessera/core'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { projectOut } from '../common/projection.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import {
  codebookDistances,
  embedFromAverages,
  expireCodes,
  gatherCodes,
  kmeans,
  l2norm,
  oneHot,
  orthogonalLoss,
} from './codebook.js'
import type { VQConfig } from './config.js'
import { decodeVQ } from './config.js'
import { gumbelNoise, requireKey } from './sampling.js'
import type { CodebookSync } from './sync.js'
import { codebookSync, localRowIndex, rankSync } from './sync.js'
import type { CodebookExtras, EmaAccumulator } from './forward-options.js'
import { transformCodebook, transformedCodes } from './codebook-transform.js'
import { emaStatistics } from './ema-update.js'
import { topkIndices } from './topk.js'
import type { VQForwardOptions } from './forward-options.js'
import { checkForward, codebookExtras } from './forward-options.js'
import { codebookRowMask, maskOutputs } from './mask.js'
import { activeCodes, codebookLayoutCodes, commitmentLoss } from './forward-losses.js'
import { crossEntropy, targetRows } from './cross-entropy.js'
import { initVQProjection, vqProjectIn, vqProjectionSpecs } from './project-in.js'
import { affineInit, affineSpecs } from './affine.js'
import { BRIDGE_PREFIX, bridgeSpecs, bridgeStage } from './bridge.js'
import { averageOverRanks, codebookParams, codebookPasses } from './codebook-passes.js'
import { routeToInput } from './directional.js'
import { manualOptimizerUpdate, optimizerInit, optimizerSpecs } from './in-place-optimizer.js'

/** Per-call options of the reference's forward that Tessera supports. */
export interface VQApplyOptions extends ApplyOptions {
  /** Overrides the config's `freeze_codebook` for this call (no EMA, no dead-code revival). */
  readonly freezeCodebook?: boolean
  /** Overrides `sample_codebook_temp` for this call. */
  readonly sampleCodebookTemp?: number
  /**
   * The reference's `manual_ema_update`: fold this batch into the EMA statistics but leave
   * `_codebook.embed` for the caller to recompute (a shared ResidualVQ codebook does it once per step).
   */
  readonly manualEmaUpdate?: boolean
  /**
   * Replays a recorded dead-code draw instead of drawing with `key`: int32 (C, M), the rows of this
   * call's (C, N, d) codebook input that the reference gave its M expired codes, in code order. For
   * the golden runner, whose cases record the reference's draw; VectorQuantize only.
   */
  readonly replacementRows?: Tensor
  /**
   * Whether the input carries a gradient: the reference routes gradients (rotation trick, DiVeQ,
   * straight-through) only then, and DiVeQ's noise changes the value. Default true.
   */
  readonly inputRequiresGrad?: boolean
}

/** VectorQuantize's result: a QuantizeResult and the parameters its forward rewrote. */
export interface VQResult extends QuantizeResult {
  /**
   * Parameters this call rewrote, as the reference writes a parameter's data inside its forward:
   * the learnable codebook after dead-code revival or the in-place optimizer's step (and a bridge's
   * parameters after that step). A training step adopts them before its own optimizer update,
   * e.g. `opt.update({ ...params, ...res.updatedParams }, grads, optState)`; the gradients the
   * forward gives these parameters are those of their new values, as torch's are.
   */
  readonly updatedParams?: Named<Tensor>
}

/** Everything VectorQuantize's forward takes per call: the shared options and its own (mask, topk, ...). */
export type VQCallOptions = VQApplyOptions & VQForwardOptions

/** State-dict names of the codebook buffers, relative to the quantizer's prefix. */
export const CB = {
  embed: '_codebook.embed',
  clusterSize: '_codebook.cluster_size',
  embedAvg: '_codebook.embed_avg',
  initted: '_codebook.initted',
} as const

// distinct tags so that each random use draws from its own stream
const TAG_KMEANS = 1
const TAG_GUMBEL = 2
const TAG_EXPIRE = 3
const TAG_ORTHO = 4

export interface CodebookState {
  readonly embed: Tensor
  readonly clusterSize: Tensor
  readonly embedAvg: Tensor
  readonly initted: Tensor
}

export interface CodebookStep {
  /** Selected codes (C, N, d), with the codebook as it was before this call's update. */
  readonly quantize: Tensor
  /** int32 (C, N) */
  readonly ind: Tensor
  /** Negative distances or cosine similarities (C, N, K). */
  readonly dist: Tensor
  readonly next: CodebookState
  /** What `CodebookCall.prepare` gave, when there was one. */
  readonly prepared?: PreparedCodebook
  /** After an `accumEmaUpdate` call: the accumulated statistics (the buffers in `next` are unchanged). */
  readonly accumulated?: EmaAccumulator
}

/** The codebook as distances see it, and the rows the EMA statistics sum (see `CodebookCall.prepare`). */
export interface PreparedCodebook {
  readonly embed: Tensor
  readonly statsInput?: Tensor
  /** Buffers the preparation updated (affine statistics), under their state-dict names. */
  readonly state?: Named<Tensor>
}

export interface CodebookCall {
  readonly training: boolean
  readonly freeze: boolean
  readonly temperature: number
  readonly key?: Tensor
  /** Accumulate EMA statistics but leave `embed` to a later `embedFromAverages` (shared ResidualVQ codebook). */
  readonly manualEma?: boolean
  /** A recorded dead-code draw to replay (see `VQApplyOptions.replacementRows`). */
  readonly replacementRows?: Tensor
  /**
   * Maps the raw codebook (after k-means init) to the one distances and codes are taken from (the
   * reference's bridge and affine transform), and gives the rows its EMA sums use; the raw codebook
   * is what the EMA and dead-code revival rewrite.
   */
  readonly prepare?: (embed: Tensor) => PreparedCodebook
  /** Forward arguments that reach the codebook: token mask, top-k, codebook transform, EMA options. */
  readonly extras?: CodebookExtras
  /** The ranks this call syncs with (absent: one process). */
  readonly sync?: CodebookSync
  readonly where: string
}

/**
 * One forward of the reference's `Codebook` on (C, N, d) rows: k-means init when not yet
 * initted, nearest code (or Gumbel sample), then in training the EMA step and dead-code revival.
 */
export function codebookForward(cfg: VQConfig, s: CodebookState, flat: Tensor, call: CodebookCall): CodebookStep {
  const K = cfg.codebook_size
  const cosine = cfg.use_cosine_sim
  let st = s
  if (cfg.kmeans_init) {
    // the reference runs k-means on the first batch in any mode; the flag makes it a no-op afterwards
    const key = foldKey(requireKey(call.key, call.where, 'kmeans_init (the first batch picks the initial means)'), TAG_KMEANS)
    const ks = call.sync?.kmeans ? call.sync.world : undefined
    const u = flat.builder.randomUniform(key, [flat.shape[0]!, flat.shape[1]! * (ks?.size ?? 1)])
    const { means, bins } = kmeans(flat, K, cfg.kmeans_iters, cosine, u, call.extras?.rowMask, ks)
    const avg = means.mul(bins.expandDims(-1))
    const emb = embedFromAverages(bins, avg, cfg.eps, cosine)
    const done = s.initted
    st = {
      embed: where(done, s.embed, emb),
      clusterSize: where(done, s.clusterSize, bins),
      embedAvg: where(done, s.embedAvg, avg),
      initted: s.initted.builder.full([], 1, 'bool'),
    }
  }
  const prepared = call.prepare?.(st.embed)
  const embed = prepared?.embed ?? st.embed
  const ex = call.extras
  const transformed = ex?.transform ? transformCodebook(ex.transform, embed, flat, ex.layout, cosine) : undefined
  const dist = transformed ? transformed.dist : codebookDistances(flat, embed, cosine)
  const temp = call.temperature
  let logits = dist
  if (call.training && cfg.stochastic_sample_codes && temp > 0) {
    const key = foldKey(requireKey(call.key, call.where, 'stochastic_sample_codes in training'), TAG_GUMBEL)
    const w = call.sync?.world
    // synced: this rank's rows of the noise one process draws for the whole batch
    const u = w ? flat.builder.randomUniform(key, [dist.shape[0]!, dist.shape[1]! * w.size, dist.shape[2]!]).gather(localRowIndex(w, dist.shape[1]!), 1) : flat.builder.randomUniform(key, dist.shape)
    logits = dist.div(temp).add(gumbelNoise(u))
  }
  const ind = ex?.topk !== undefined ? topkIndices(logits, ex.topk) : logits.argmax(-1)
  let quantize: Tensor
  if (call.training && cfg.straight_through && temp > 0) {
    const p = dist.div(temp).softmax(-1)
    const soft = oneHot(ind, K).add(p).sub(p.stopGradient())
    quantize = transformed ? transformedCodes(transformed.codes, ind, soft) : soft.matmul(embed)
  } else quantize = transformed ? transformedCodes(transformed.codes, ind) : gatherCodes(embed, ind)

  let next = st
  const hasDead = cfg.threshold_ema_dead_code > 0
  const emaUpdate = ex?.emaUpdate ?? cfg.ema_update
  // an accumulator no EMA step consumes (eval, frozen, top-k) is handed back unchanged
  let accumulated: EmaAccumulator | undefined = ex?.emaAccum
  // the reference makes no codebook update for a top-k call
  if (call.training && !call.freeze && ex?.topk === undefined && (emaUpdate || hasDead)) {
    const stats = emaStatistics(cfg, { embed: st.embed, clusterSize: st.clusterSize, embedAvg: st.embedAvg }, prepared?.statsInput ?? flat, ind, {
      accumulate: ex?.accumulate ?? false,
      ...(ex?.rowMask ? { rowMask: ex.rowMask } : {}),
      ...(ex?.emaUpdateWeight !== undefined ? { weight: ex.emaUpdateWeight } : {}),
      ...(ex?.emaAccum ? { accum: ex.emaAccum } : {}),
      ...(call.sync?.codebook ? { sync: call.sync.world } : {}),
    })
    accumulated = stats.accumulated
    if (!accumulated) {
      let newEmbed = st.embed
      if (emaUpdate && !call.manualEma) newEmbed = embedFromAverages(stats.clusterSize, stats.embedAvg, cfg.eps, cosine)
      let buf = { embed: newEmbed, clusterSize: stats.clusterSize, embedAvg: stats.embedAvg }
      if (hasDead) buf = expireDead(cfg, buf, flat, { ...call, ...(ex?.rowMask ? { rowMask: ex.rowMask } : {}) })
      next = { ...buf, initted: st.initted }
    }
  }
  return { quantize, ind, dist, next, ...(prepared ? { prepared } : {}), ...(accumulated ? { accumulated } : {}) }
}

/** Dead-code revival on (C, N, d) rows with this call's key. */
export function expireDead(
  cfg: VQConfig,
  buf: { embed: Tensor; clusterSize: Tensor; embedAvg: Tensor },
  flat: Tensor,
  call: Pick<CodebookCall, 'key' | 'where' | 'replacementRows' | 'sync'> & { readonly rowMask?: Tensor; readonly index?: Tensor },
  tag = 0,
) {
  const rows = call.replacementRows
  // synced (sync_kmeans): the draw orders the global rows; `index` places this rank's rows among them
  const ks = call.sync?.kmeans ? call.sync.world : undefined
  if (rows) {
    if (ks) throw new TesseraError('input', call.where, 'replacementRows (a recorded single-process draw) cannot be replayed in a synced call')
    if (call.rowMask) throw new TesseraError('input', call.where, 'replacementRows cannot be replayed with a token mask (recorded rows number the kept tokens only)')
    if (rows.dtype !== 'int32' || rows.rank !== 2 || rows.shape[0] !== flat.shape[0])
      throw new TesseraError('input', call.where, `replacementRows must be int32 (${flat.shape[0]}, M), got ${rows.dtype}[${rows.shape.join(',')}]`)
    return expireCodes(buf, flat, cfg.threshold_ema_dead_code, cfg.reset_cluster_size, cfg.use_cosine_sim, { rows })
  }
  const key = foldKey(requireKey(call.key, call.where, 'threshold_ema_dead_code > 0 in training (replacement rows)'), TAG_EXPIRE + 16 * tag)
  const u = flat.builder.randomUniform(key, [flat.shape[0]!, flat.shape[1]! * (ks?.size ?? 1)])
  const synced = ks ? { sync: ks, ...(call.index ? { index: call.index } : {}) } : {}
  return expireCodes(buf, flat, cfg.threshold_ema_dead_code, cfg.reset_cluster_size, cfg.use_cosine_sim, { u, ...(call.rowMask ? { rowMask: call.rowMask } : {}), ...synced })
}

export interface VectorQuantize extends Quantizer<VQConfig> {
  readonly kind: 'VectorQuantize'
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: VQCallOptions): VQResult
  /**
   * The reference's `update_in_place_optimizer`, for `manual_in_place_optimizer_update`: steps the
   * codebook's parameters with `grads` (a forward's `extra` `in_place_grad.*`, plus any other
   * gradient of them), the optimizer's state read from and written to `state`.
   */
  updateInPlaceOptimizer(params: Named<Tensor>, state: Named<Tensor>, grads: Named<Tensor>, opts?: Pick<ApplyOptions, 'world'>): { params: Record<string, Tensor>; state: Record<string, Tensor> }
  /** The reference's `get_output_from_indices`: codes for indices, projected out. `state` holds the codebook. */
  indicesToCodes(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
  /** Whether `_codebook.embed` lives in params (learnable codebook) or in state (EMA or frozen). */
  readonly embedInParams: boolean
}

export function makeVectorQuantize(cfg: VQConfig): VectorQuantize {
  const W = 'VectorQuantize'
  const { heads: h, codebook_dim: cd, codebook_size: K, num_codebooks: C } = cfg
  const proj: Projection = { present: cfg.has_projections, bias: true, dim: cfg.dim, codebookDims: cd * h }
  const embedInParams = cfg.learnable_codebook
  const embedAval: Aval = { shape: [C, K, cd], dtype: 'float32' }

  const paramSpecs: Record<string, Aval> = { ...vqProjectionSpecs(proj, cfg.layernorm_after_project_in) }
  const stateSpecs: Record<string, Aval> = {
    [CB.initted]: { shape: [], dtype: 'bool' },
    [CB.clusterSize]: { shape: [C, K], dtype: 'float32' },
    [CB.embedAvg]: embedAval,
  }
  if (embedInParams) paramSpecs[CB.embed] = embedAval
  else stateSpecs[CB.embed] = embedAval
  // the reparametrisation options' parameters and buffers: the bridge's, the affine statistics, the in-place optimizer's state
  const bridge = bridgeStage(cfg.vq_bridge)
  Object.assign(paramSpecs, bridgeSpecs(bridge))
  if (cfg.affine_param) Object.assign(stateSpecs, affineSpecs(C, cd))
  const opt = cfg.in_place_codebook_optimizer
  const optSpecs = opt ? optimizerSpecs(opt, { [CB.embed]: embedAval, ...bridgeSpecs(bridge) }) : {}
  Object.assign(stateSpecs, optSpecs)

  const init = (key: random.Key): Init => {
    const [kp, ke] = random.splitKey(key, 2) as [random.Key, random.Key]
    let embed: HostTensor
    if (cfg.kmeans_init) embed = zerosHost([C, K, cd], 'float32')
    else {
      // torch.nn.init.kaiming_uniform_ on (C, K, d): fan_in = K·d, gain sqrt(2)
      const bound = Math.sqrt(6 / (K * cd))
      const data = random.uniformHost(ke, C * K * cd).map((v) => (2 * v - 1) * bound)
      if (cfg.use_cosine_sim)
        for (let r = 0; r < C * K; r++) {
          let s = 0
          for (let j = 0; j < cd; j++) s += data[r * cd + j]! ** 2
          const nrm = Math.max(Math.sqrt(s), 1e-6)
          for (let j = 0; j < cd; j++) data[r * cd + j] = data[r * cd + j]! / nrm
        }
      embed = tensorOf(data, [C, K, cd])
    }
    const state: Record<string, HostTensor> = {
      [CB.initted]: tensorOf([cfg.kmeans_init ? 0 : 1], [], 'bool'),
      [CB.clusterSize]: tensorOf(new Float32Array(C * K).fill(1), [C, K]),
      [CB.embedAvg]: tensorOf(embed.data.slice(), [C, K, cd]),
    }
    const params: Record<string, HostTensor> = initVQProjection(proj, kp, cfg.layernorm_after_project_in)
    if (embedInParams) params[CB.embed] = embed
    else state[CB.embed] = embed
    if (bridge) for (const [k, v] of Object.entries(bridge.init(random.splitKey(key, 3)[2]!))) params[`${BRIDGE_PREFIX}${k}`] = v
    if (cfg.affine_param) Object.assign(state, affineInit(C, cd))
    if (opt) Object.assign(state, optimizerInit(opt, Object.fromEntries(Object.keys(bridgeSpecs(bridge)).concat(CB.embed).map((k) => [k, params[k]!]))))
    return { params, state }
  }

  /** The input as (b, n, dim) and how to put per-token outputs back in its layout. */
  const layoutOf = (x: Tensor) => {
    if (cfg.accept_image_fmap || cfg.accept_3d_fmap) {
      const rank = cfg.accept_image_fmap ? 4 : 5
      if (x.rank !== rank)
        throw new TesseraError('shape', W, `${cfg.accept_image_fmap ? 'accept_image_fmap expects (b, c, h, w)' : 'accept_3d_fmap expects (b, c, d, h, w)'}, got [${x.shape.join(',')}]`)
      return packLayout(x, true, cfg.dim, W)
    }
    if (!cfg.channel_last) {
      if (x.rank !== 3) throw new TesseraError('shape', W, `channel_last: false expects (b, d, n), got [${x.shape.join(',')}]`)
      return packLayout(x, true, cfg.dim, W)
    }
    if (x.rank === 2) {
      if (x.shape[1] !== cfg.dim) throw new TesseraError('shape', W, `input has last dimension ${x.shape[1]}; expected dim ${cfg.dim}`)
      return { x: x.expandDims(1), unpack: (t: Tensor) => t.squeeze(1), unpackTokens: (t: Tensor) => t.squeeze(1) }
    }
    return packLayout(x, false, cfg.dim, W)
  }

  const getEmbed = (params: Named<Tensor>, state: Named<Tensor> | undefined, op: string): Tensor => {
    const e = embedInParams ? params[CB.embed] : (state?.[CB.embed] ?? params[CB.embed])
    if (!e) throw new TesseraError('input', `${W}.${op}`, `missing ${CB.embed} (in ${embedInParams ? 'params' : 'state'})`)
    return e
  }

  const need = (rec: Named<Tensor>, name: string, op: string): Tensor => {
    const t = rec[name]
    if (!t) throw new TesseraError('input', `${W}.${op}`, `missing state entry ${name}`)
    return t
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: VQCallOptions): VQResult => {
    if (x.dtype !== 'float32') throw new TesseraError('dtype', W, `input must be float32, got ${x.dtype}`)
    const lay = layoutOf(x)
    const [b, n] = lay.x.shape as [number, number]
    const fwd = checkForward(cfg, x, [b, n], opts)
    const sync = codebookSync(cfg, rankSync(opts.world, x.builder, W))
    const z = vqProjectIn(proj, params, lay.x, cfg.layernorm_after_project_in) // (b, n, h·cd)
    // the codebook's input in the reference's layout, and as (C, N, cd) rows
    let cin: Tensor
    if (h === 1) cin = z
    else if (cfg.separate_codebook_per_head) cin = z.reshape([b, n, h, cd]).transpose([2, 0, 1, 3])
    else cin = z.reshape([b, n, h, cd]).transpose([0, 2, 1, 3]).reshape([1, b * h, n, cd])
    if (cfg.use_cosine_sim) cin = l2norm(cin)
    const N = h === 1 || cfg.separate_codebook_per_head ? b * n : b * h * n
    const flat = cin.reshape([C, N, cd])
    const rowLayout: [number, number, number] = h === 1 || cfg.separate_codebook_per_head ? [C, b, n] : [1, b * h, n]
    const rowMask = fwd.mask ? codebookRowMask(fwd.mask, C, h, cfg.separate_codebook_per_head) : undefined

    const training = opts.training
    const freeze = opts.freezeCodebook ?? cfg.freeze_codebook
    const s0: CodebookState = {
      embed: getEmbed(params, state, 'apply'),
      clusterSize: need(state, CB.clusterSize, 'apply'),
      embedAvg: need(state, CB.embedAvg, 'apply'),
      initted: need(state, CB.initted, 'apply'),
    }
    const setup = { cfg, bridge, optimizerSpecs: optSpecs, embedInParams, embedName: CB.embed, forward: codebookForward }
    const passes = codebookPasses(setup, params, state, s0, flat, {
      training,
      freeze,
      temperature: opts.sampleCodebookTemp ?? cfg.sample_codebook_temp,
      ...(opts.key ? { key: opts.key } : {}),
      manualEma: opts.manualEmaUpdate ?? false,
      ...(opts.replacementRows ? { replacementRows: opts.replacementRows } : {}),
      extras: codebookExtras(fwd, rowLayout, rowMask),
      ...(sync ? { sync } : {}),
      where: W,
    })
    const step = passes.step
    const bl = x.builder
    const zero = bl.scalar(0)
    let commitment = zero, diversity = zero, orthogonal = zero, loss = zero
    const distRef = h === 1 || cfg.separate_codebook_per_head ? step.dist.reshape([C, b, n, K]) : step.dist.reshape([1, b * h, n, K])
    let quantize = step.quantize
    if (training) {
      // given target indices the reference returns their cross entropy instead of these losses
      if (cfg.codebook_diversity_loss_weight > 0 && !fwd.targets) {
        const prob = distRef.mul(cfg.codebook_diversity_temperature).softmax(-1)
        diversity = entropy(prob.mean([0, 1])).mean().neg()
        loss = loss.add(diversity.mul(cfg.codebook_diversity_loss_weight))
      }
      // DiVeQ learns without a commitment loss (the reference's has_commitment_loss)
      if (cfg.commitment_weight > 0 && !fwd.targets && !cfg.directional_reparam) {
        const cq = cfg.learnable_codebook && !freeze ? quantize : quantize.stopGradient()
        commitment = commitmentLoss(cfg, { codes: cq, flat, dist: step.dist, ind: step.ind, raw: lay.x, ...(fwd.mask ? { mask: fwd.mask, rowMask: rowMask! } : {}), ...(fwd.topk !== undefined ? { topk: fwd.topk } : {}) })
        loss = loss.add(commitment.mul(cfg.commitment_weight))
      }
      if (cfg.orthogonal_reg_weight > 0 && !fwd.targets) {
        const codebook = passes.codebook
        let mask: Tensor | undefined
        // the reference's cross-entropy commitment has set masked-out indices to -1 by now
        const ceMasked = cfg.commitment_weight > 0 && !cfg.directional_reparam && cfg.commitment_use_cross_entropy_loss ? rowMask : undefined
        if (cfg.orthogonal_reg_active_codes_only) mask = activeCodes(step.ind, K, ceMasked, cfg.orthogonal_reg_max_codes)
        const maxCodes = cfg.orthogonal_reg_max_codes
        if (maxCodes !== null && (mask !== undefined || K > maxCodes)) {
          const key = foldKey(requireKey(opts.key, W, 'orthogonal_reg_max_codes (random subset of codes)'), TAG_ORTHO)
          // random order of the candidate codes: non-candidates are pushed past every candidate
          let u = bl.randomUniform(key, [K])
          if (mask) u = where(mask, u, u.add(2))
          const chosen = ranksOf(u).lt(maxCodes)
          mask = mask ? mask.and(chosen) : chosen
        }
        orthogonal = orthogonalLoss(codebook, mask)
        loss = loss.add(orthogonal.mul(cfg.orthogonal_reg_weight))
      }
      const src = fwd.topk !== undefined ? flat.expandDims(-2).broadcastTo(quantize.shape) : flat // the input repeated for each of the k codes
      quantize = routeToInput(cfg, src, quantize, { ...(opts.inputRequiresGrad !== undefined ? { inputRequiresGrad: opts.inputRequiresGrad } : {}), ...(opts.key ? { key: opts.key } : {}), where: W })
    }
    // merge heads back to (b, n, h·cd)
    let merged: Tensor
    if (h === 1) merged = quantize.reshape([b, n, ...quantize.shape.slice(2)])
    else if (cfg.separate_codebook_per_head) merged = quantize.reshape([h, b, n, cd]).transpose([1, 2, 0, 3]).reshape([b, n, h * cd])
    else merged = quantize.reshape([b, h, n, cd]).transpose([0, 2, 1, 3]).reshape([b, n, h * cd])
    const out = lay.unpack(projectOut(proj, params, merged))

    let ind: Tensor
    if (h === 1) ind = step.ind.reshape([b, n, ...step.ind.shape.slice(2)])
    else if (cfg.separate_codebook_per_head) ind = step.ind.reshape([h, b, n]).transpose([1, 2, 0])
    else ind = step.ind.reshape([b, h, n]).transpose([0, 2, 1])

    const next: Record<string, Tensor> = {
      [CB.initted]: step.next.initted,
      [CB.clusterSize]: step.next.clusterSize,
      [CB.embedAvg]: step.next.embedAvg,
    }
    if (!embedInParams) next[CB.embed] = step.next.embed
    Object.assign(next, passes.state)
    const extra: Record<string, Tensor> = { codebook_dist: distRef, codebook_input: cin, projected: z }
    for (const [k, g] of Object.entries(passes.inPlaceGrads ?? {})) extra[`in_place_grad.${k}`] = g
    const rewritten = passes.updatedParams ? { updatedParams: passes.updatedParams } : {}
    if (step.accumulated) Object.assign(extra, { ema_accum_cluster_size: step.accumulated.clusterSize, ema_accum_embed_sum: step.accumulated.embedSum })
    if (fwd.targets) {
      const ce = crossEntropy(step.dist, targetRows(fwd.targets, h, cfg.separate_codebook_per_head))
      const quantized = codebookLayoutCodes(quantize, h, rowLayout)
      return { quantized, indices: lay.unpackTokens(ind), loss: ce, losses: { cross_entropy: ce }, state: next, extra, ...rewritten }
    }
    const masked = fwd.mask ? maskOutputs(fwd.mask, out, lay.unpackTokens(ind), x, cfg.return_zeros_for_masked_padding) : undefined
    return {
      quantized: masked?.quantized ?? out,
      indices: masked?.indices ?? lay.unpackTokens(ind),
      loss,
      losses: { commitment, codebook_diversity: diversity, orthogonal_reg: orthogonal, ...(opt ? { inplace_optimize: passes.inPlaceLoss ?? zero } : {}) },
      state: next,
      extra,
      ...rewritten,
    }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${W}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    const embed = getEmbed(params, state, 'indicesToCodes')
    let codes: Tensor
    if (h === 1) codes = embed.reshape([C * K, cd]).gather(indices, 0)
    else {
      if (indices.shape[indices.rank - 1] !== h)
        throw new TesseraError('shape', `${W}.indicesToCodes`, `multi-head indices need a last axis of ${h} heads, got [${indices.shape.join(',')}]`)
      if (cfg.separate_codebook_per_head) {
        codes = gatherCodes(embed, indices.moveAxis(-1, 0)).moveAxis(0, -2)
        codes = codes.reshape([...codes.shape.slice(0, -2), h * cd])
      } else {
        // the reference returns (..., heads, codebook_dim) here: heads are not merged
        if (proj.present)
          throw new TesseraError('input', `${W}.indicesToCodes`, 'a shared multi-head codebook with projections has no output from indices in the reference (codes stay (..., heads, codebook_dim))')
        codes = embed.reshape([K, cd]).gather(indices, 0)
      }
    }
    codes = projectOut(proj, params, codes)
    const channelFirst = !cfg.channel_last || cfg.accept_image_fmap || cfg.accept_3d_fmap
    return channelFirst ? codes.moveAxis(-1, 1) : codes
  }

  const updateInPlaceOptimizer = (params: Named<Tensor>, state: Named<Tensor>, grads: Named<Tensor>, o: Pick<ApplyOptions, 'world'> = {}) => {
    if (!opt) throw new TesseraError('config', `${W}.in_place_codebook_optimizer`, 'updateInPlaceOptimizer needs an in_place_codebook_optimizer')
    // traced with a world under sync_codebook, the gradients are averaged over the ranks first, as the reference's DDP branch
    const sync = codebookSync(cfg, rankSync(o.world, getEmbed(params, state, 'updateInPlaceOptimizer').builder, W))
    const g = averageOverRanks({ ...grads }, sync?.codebook ? sync.world : undefined)
    return manualOptimizerUpdate(opt, optSpecs, codebookParams(params, CB.embed), state, g, `${W}.updateInPlaceOptimizer`)
  }

  return { kind: 'VectorQuantize', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes, embedInParams, updateInPlaceOptimizer }
}

/** Build a VectorQuantize from the reference's keyword arguments; a bad config is a Left naming the field. */
export const vectorQuantize = (options: unknown): E.Either<TesseraError, VectorQuantize> => E.map(makeVectorQuantize)(decodeVQ(options))
