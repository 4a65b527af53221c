import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, random, tensorOf, where } from '@tessera/core'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { projectOut } from '../common/projection.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import { gatherCodes } from './codebook.js'
import type { VQConfig } from './config.js'
import { decodeVQ } from './config.js'
import { codebookSync, rankSync } from './sync.js'
import type { CodebookState } from './codebook-forward.js'
import { CB, codebookForward } from './codebook-forward.js'
import type { VQForwardOptions } from './forward-options.js'
import { checkForward, codebookExtras } from './forward-options.js'
import { codebookRowMask, maskOutputs } from './mask.js'
import { codebookLayoutCodes, trainingLosses } from './forward-losses.js'
import { crossEntropy, targetRows } from './cross-entropy.js'
import { initVQProjection, vqProjectIn, vqProjectionSpecs } from './project-in.js'
import { affineInit, affineSpecs } from './affine.js'
import { BRIDGE_PREFIX, bridgeSpecs, bridgeStage } from './bridge.js'
import { averageOverRanks, codebookParams, codebookPasses } from './codebook-passes.js'
import { routeToInput } from './directional.js'
import { distancesInLayout, headIndices, mergeHeads, splitHeads } from './heads.js'
import { manualOptimizerUpdate, optimizerInit, optimizerSpecs } from './in-place-optimizer.js'
import { initialEmbed } from './vq-init.js'

// the codebook's forward lives in codebook-forward.ts; these stay importable from here
export type { CodebookCall, CodebookState, CodebookStep, PreparedCodebook } from './codebook-forward.js'
export { CB, codebookForward, expireDead } from './codebook-forward.js'

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
    const embed = initialEmbed(cfg, ke)
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
    const { cin, flat, rowLayout } = splitHeads(cfg, z)
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
    const zero = x.builder.scalar(0)
    const distRef = distancesInLayout(step.dist, rowLayout)
    let quantize = step.quantize
    let losses = { loss: zero, commitment: zero, diversity: zero, orthogonal: zero }
    if (training) {
      losses = trainingLosses(cfg, {
        quantize, flat, dist: step.dist, distRef, ind: step.ind, raw: lay.x, codebook: passes.codebook, freeze,
        ...(opts.key ? { key: opts.key } : {}), fwd, ...(rowMask ? { rowMask } : {}), where: W,
      })
      const src = fwd.topk !== undefined ? flat.expandDims(-2).broadcastTo(quantize.shape) : flat // the input repeated for each of the k codes
      quantize = routeToInput(cfg, src, quantize, { ...(opts.inputRequiresGrad !== undefined ? { inputRequiresGrad: opts.inputRequiresGrad } : {}), ...(opts.key ? { key: opts.key } : {}), where: W })
    }
    const out = lay.unpack(projectOut(proj, params, mergeHeads(cfg, quantize, b, n)))
    const ind = headIndices(cfg, step.ind, b, n)

    const next: Record<string, Tensor> = {
      [CB.initted]: step.next.initted,
      [CB.clusterSize]: step.next.clusterSize,
      [CB.embedAvg]: step.next.embedAvg,
    }
    if (!embedInParams) next[CB.embed] = step.next.embed
    // a k-means codebook left uninitialised (every token masked out) leaves the whole state as given (the
    // affine statistics too); its codebook is never a parameter (kmeans_init refuses learnable_codebook)
    const unchanged = step.unchanged
    for (const [k, t] of Object.entries(passes.state)) next[k] = unchanged && state[k] ? where(unchanged, state[k], t) : t
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
      loss: losses.loss,
      losses: { commitment: losses.commitment, codebook_diversity: losses.diversity, orthogonal_reg: losses.orthogonal, ...(opt ? { inplace_optimize: passes.inPlaceLoss ?? zero } : {}) },
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