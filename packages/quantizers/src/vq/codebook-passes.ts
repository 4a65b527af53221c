import type { Aval, Tensor } from '@tessera/core'
import { TesseraError, foldKey, valueAndGrad } from '@tessera/core'
import type { Named } from '../quantizer.js'
import type { Stage } from '../sequential/sequential.js'
import type { AffineState } from './affine.js'
import { affineCodebook, affineInput, readAffine, updateAffine, writeAffine } from './affine.js'
import { BRIDGE_PREFIX, applyBridge } from './bridge.js'
import { gatherCodes } from './codebook.js'
import type { VQConfig } from './config.js'
import type { RankSync } from './sync.js'
import { sumOverRanks } from './sync.js'
import { asLeaf, optimizerState, optimizerStep } from './in-place-optimizer.js'
import type { CodebookCall, CodebookState, CodebookStep, PreparedCodebook } from './codebook-forward.js'

/**
 * The codebook's part of VectorQuantize's forward with the reparametrisation options: the affine
 * statistics and the bridge prepare the codebook inside each codebook pass; with an in-place
 * optimizer, a first pass gives the loss it steps on, and a second pass (no EMA or dead-code
 * update, as the reference's `update_usage = False`) quantizes with the stepped codebook.
 */

/** Key tag of the second pass (its own Gumbel draws). VectorQuantize's other tags are 1 to 4. */
const TAG_SECOND_PASS = 5

export interface PassesSetup {
  readonly cfg: VQConfig
  readonly bridge: Stage | null
  /** The optimizer's state entries in the quantizer's state. */
  readonly optimizerSpecs: Named<Aval>
  readonly embedInParams: boolean
  /** The state-dict name of the codebook (`CB.embed`). */
  readonly embedName: string
  /** One codebook pass (codebook-forward.ts's `codebookForward`, passed in by VectorQuantize). */
  readonly forward: (cfg: VQConfig, s: CodebookState, flat: Tensor, call: CodebookCall) => CodebookStep
}

export interface PassesResult {
  /** The last pass: its codes, indices and distances; `next` holds the codebook buffers after the call. */
  readonly step: CodebookStep
  /** New affine buffers and optimizer state, under their state names. */
  readonly state: Record<string, Tensor>
  /** Parameters this call rewrote (see `VQResult.updatedParams`). */
  readonly updatedParams?: Record<string, Tensor>
  /** mse(codes, input) of the first pass, the loss the in-place optimizer stepped on. */
  readonly inPlaceLoss?: Tensor
  /** Its gradient, when `manual_in_place_optimizer_update` leaves the step to the caller. */
  readonly inPlaceGrads?: Record<string, Tensor>
  /** The raw codebook after the call (the orthogonal loss's), carrying the parameter's gradient when learnable. */
  readonly codebook: Tensor
}

/**
 * The reference's `update_in_place_optimizer` under DDP (`sync_codebook`): each gradient summed over
 * the ranks and divided by their number, so every rank takes the same step (with equal shards, the
 * whole batch's).
 */
export function averageOverRanks(grads: Record<string, Tensor>, world: RankSync | undefined): Record<string, Tensor> {
  if (!world) return grads
  return Object.fromEntries(Object.entries(grads).map(([k, g]) => [k, sumOverRanks(g, world).div(world.size)]))
}

/** The bridge's parameters, under their full names. */
const bridgeParamsOf = (params: Named<Tensor>): Record<string, Tensor> => Object.fromEntries(Object.entries(params).filter(([k]) => k.startsWith(BRIDGE_PREFIX)))

export function codebookPasses(setup: PassesSetup, params: Named<Tensor>, state: Named<Tensor>, s0: CodebookState, flat: Tensor, call: CodebookCall): PassesResult {
  const { cfg, bridge, forward } = setup
  const EMBED = setup.embedName
  const bridge0 = bridgeParamsOf(params)

  /** The codebook as the reference's `Codebook.forward` sees it: bridged, then moved onto the batch's statistics. */
  const prepareWith = (aff: AffineState | undefined, bp: Named<Tensor>) =>
    aff || bridge
      ? (raw: Tensor): PreparedCodebook => {
          const a = aff ? updateAffine(cfg, aff, flat, raw, call.training, call.sync?.affine ? call.sync.world : undefined, call.extras?.rowMask) : undefined
          let e = bridge ? applyBridge(bridge, bp, raw, call.where) : raw
          if (a) e = affineCodebook(a, e)
          return a ? { embed: e, statsInput: affineInput(a, flat), state: writeAffine(a) } : { embed: e }
        }
      : undefined
  const affineOf = (step: CodebookStep) => (cfg.affine_param ? readAffine(step.prepared!.state!, call.where) : undefined)

  const affine0 = cfg.affine_param ? readAffine(state, call.where) : undefined
  const prep1 = prepareWith(affine0, bridge0)
  const step1 = forward(cfg, s0, flat, { ...call, ...(prep1 ? { prepare: prep1 } : {}) })
  const rewritten = setup.embedInParams && step1.next.embed !== s0.embed
  const opt = cfg.in_place_codebook_optimizer

  // the optimizer's state, unchanged by a call that takes no step
  const optIn = opt ? optimizerState(state, setup.optimizerSpecs, call.where) : {}
  const optKeep = Object.fromEntries(Object.keys(setup.optimizerSpecs).map((k) => [k, state[k]!]))
  if (!opt || !call.training || call.freeze) {
    const st = { ...optKeep, ...(step1.prepared?.state ?? {}) }
    if (!rewritten) return { step: step1, state: st, codebook: step1.next.embed }
    return { step: step1, state: st, updatedParams: { [EMBED]: step1.next.embed.stopGradient() }, codebook: asLeaf(s0.embed, step1.next.embed) }
  }

  const ex = call.extras
  if (ex?.topk !== undefined || ex?.transform)
    throw new TesseraError('input', `${call.where}.in_place_codebook_optimizer`, `is not supported with ${ex.topk !== undefined ? 'topk' : 'codebookTransformFn'} in the same call`)
  // the loss the reference backpropagates: mse(first pass's codes, input) over the kept tokens, the codes a function of the codebook's parameters
  const affine1 = affineOf(step1)
  const lossOf = (cb: Tensor, bp: Record<string, Tensor>, ind: Tensor, x: Tensor, aff: Record<string, Tensor>, mask: Tensor[]) => {
    let e = bridge ? applyBridge(bridge, bp, cb, call.where) : cb
    if (cfg.affine_param) e = affineCodebook(readAffine(aff, call.where), e)
    const sq = gatherCodes(e, ind).sub(x).square()
    if (mask.length === 0) return sq.mean()
    const m = mask[0]!.cast('float32')
    return sq.sum(-1).mul(m).sum().div(m.sum().mul(x.shape[2]!))
  }
  const mask = ex?.rowMask ? [ex.rowMask] : []
  const { value: inPlaceLoss, grad } = valueAndGrad(lossOf, [0, 1] as const)(s0.embed, bridge0, step1.ind, flat.stopGradient(), affine1 ? writeAffine(affine1) : {}, mask)
  // this rank's gradients; the automatic step averages them over the ranks (manual: updateInPlaceOptimizer does)
  const grads: Record<string, Tensor> = { [EMBED]: grad[0], ...grad[1] }

  let embed2: Tensor, bridge2: Record<string, Tensor>, updatedParams: Record<string, Tensor> | undefined
  let optState: Record<string, Tensor> = optKeep
  if (cfg.manual_in_place_optimizer_update) {
    embed2 = rewritten ? asLeaf(s0.embed, step1.next.embed) : s0.embed
    bridge2 = bridge0
    updatedParams = rewritten ? { [EMBED]: step1.next.embed.stopGradient() } : undefined
  } else {
    // torch steps the parameters' current data: the codebook after this pass's dead-code revival
    const stepped = optimizerStep(opt, { [EMBED]: step1.next.embed, ...bridge0 }, averageOverRanks(grads, call.sync?.codebook ? call.sync.world : undefined), optIn)
    optState = stepped.state
    updatedParams = stepped.params
    embed2 = asLeaf(s0.embed, stepped.params[EMBED]!)
    bridge2 = Object.fromEntries(Object.entries(bridge0).map(([k, p]) => [k, asLeaf(p, stepped.params[k]!)]))
  }
  const key2 = call.key ? foldKey(call.key, TAG_SECOND_PASS) : undefined
  const prep2 = prepareWith(affine1, bridge2)
  const step2 = forward(cfg, { ...step1.next, embed: embed2 }, flat, {
    ...call,
    freeze: true,
    ...(key2 ? { key: key2 } : {}),
    ...(prep2 ? { prepare: prep2 } : {}),
  })
  return {
    // statistics an accumulating first pass gathered stay this call's (the second pass makes no update)
    step: step1.accumulated ? { ...step2, accumulated: step1.accumulated } : step2,
    state: { ...(step2.prepared?.state ?? {}), ...optState },
    ...(updatedParams ? { updatedParams } : {}),
    inPlaceLoss,
    ...(cfg.manual_in_place_optimizer_update ? { inPlaceGrads: grads } : {}),
    codebook: embed2,
  }
}

/** The parameters the in-place optimizer steps: the codebook and the bridge's. */
export const codebookParams = (params: Named<Tensor>, embedName: string): Record<string, Tensor> => ({ [embedName]: params[embedName]!, ...bridgeParamsOf(params) })
