import type { Tensor } from '@tessera/core'
import { TesseraError, concat, prefixed, scoped, where } from '@tessera/core'
import type { Named } from '../quantizer.js'
import { layerKey, layerPrefix, quantizeDropoutCut } from '../residual/residual.js'
import { embedFromAverages, l2norm, trackStatistics } from '../vq/codebook.js'
import type { CodebookState, VQApplyOptions } from '../vq/vector-quantize.js'
import { CB, expireDead } from '../vq/vector-quantize.js'
import type { RVQConfig } from './config.js'
import { kmeansInit, layerCandidates, topIndices } from './layer-candidates.js'
import type { QincoShape } from './qinco.js'
import { qincoCodes } from './qinco.js'

/**
 * ResidualVQ's layer loop when it keeps several paths (beam search) or when layers quantize with
 * QINCo's per-token codebooks; the plain greedy loop lives in the residual combinator.
 *
 * Beam search as the reference runs it: each of the current paths (one at the start) expands into
 * its layer's `width` nearest codes, a path's score is minus the sum of its layers' losses times
 * `beam_score_quantizer_weights`, and the `width` best paths survive; at the end the best one is
 * returned. Where the reference crashes (eval, batch > 1), the same algorithm runs per token: every
 * token keeps its own beams (a batch is the tokens of its rows), and in eval paths are scored with
 * the commitment the training step would compute, while the returned losses are 0 as in any eval
 * call. After the search only layer 0's codebook takes the batch into its EMA statistics (with the
 * best paths' layer-0 codes), as in the reference, whose loop over the saved layer inputs stops
 * after the first; other layers change only by k-means init.
 */
export interface SearchResult {
  /** (B, d) the chosen path's output per token */
  readonly quantized: Tensor
  /** int32 (B, q) */
  readonly indices: Tensor
  /** (q) the layers' losses, averaged over tokens (0 in eval) */
  readonly allLosses: Tensor
  readonly losses: Record<string, Tensor>
  readonly state: Record<string, Tensor>
}

export interface SearchSpec {
  readonly cfg: RVQConfig
  /** paths kept per token: 1 for QINCo without beam search */
  readonly width: number
  /** whether layers run as the reference's topk forward (beam search) */
  readonly beam: boolean
  readonly qinco?: QincoShape
  /** The last active layer when the call fixed quantize dropout's cut-off (a dropout seed); otherwise drawn from the key. */
  readonly fixedCut?: number
  readonly where: string
}

/** Rows `sel` (B, k) of `t` (B, M, ...) along axis 1: (B, k, ...). */
function pickPaths(t: Tensor, sel: Tensor): Tensor {
  const [B, M] = t.shape as [number, number]
  const rest = t.shape.slice(2)
  const offsets = sel.builder.iota(sel.shape, 0).mul(M)
  return t.reshape([B * M, ...rest]).gather(sel.add(offsets), 0)
}

/** `t` (B, J, ...) with every path repeated k times: (B, J·k, ...), path j's copies together. */
function repeatPaths(t: Tensor, k: number): Tensor {
  if (k === 1) return t
  const [B, J] = t.shape as [number, number]
  const rest = t.shape.slice(2)
  return t.expandDims(2).broadcastTo([B, J, k, ...rest]).reshape([B, J * k, ...rest])
}

export function searchPaths(
  spec: SearchSpec,
  params: Named<Tensor>,
  state: Named<Tensor>,
  z: Tensor,
  layout: readonly [number, number],
  opts: VQApplyOptions & { readonly mask?: Tensor },
): SearchResult {
  const { cfg, width, beam, where: W } = spec
  const nq = cfg.num_quantizers
  const [B, d] = z.shape as [number, number]
  const bl = z.builder
  const shared = cfg.shared_codebook
  const training = opts.training
  const statePrefix = (i: number) => layerPrefix(shared ? 0 : i)
  // a token mask (greedy QINCo only): masked-out rows get a zero code and index -1 from every
  // layer, as the reference's layers hand back, and the losses average over the kept rows
  if (opts.mask && beam) throw new TesseraError('input', `${W}.mask`, 'not supported with beam search (the reference crashes there)')
  const keep = opts.mask?.reshape([B])

  const dropping = training && cfg.quantize_dropout && spec.fixedCut === undefined
  if (dropping && !opts.key) throw new TesseraError('input', `${W}.quantize_dropout`, 'training with quantize_dropout needs a random key (opts.key)')
  const cut = spec.fixedCut !== undefined ? bl.scalar(spec.fixedCut, 'int32') : dropping ? quantizeDropoutCut(opts.key!, nq, { cutoffIndex: cfg.quantize_dropout_cutoff_index, multipleOf: cfg.quantize_dropout_multiple_of }) : undefined

  // each layer's codebook buffers as they stand (a shared codebook is one entry)
  const states = new Map<string, CodebookState>()
  const codebookOf = (i: number): CodebookState => {
    const p = statePrefix(i)
    const have = states.get(p)
    if (have) return have
    const s = scoped(state, p), lp = scoped(params, layerPrefix(i))
    const embed = s[CB.embed] ?? lp[CB.embed]
    if (!embed) throw new TesseraError('input', W, `missing ${p}${CB.embed}`)
    return { embed, clusterSize: s[CB.clusterSize]!, embedAvg: s[CB.embedAvg]!, initted: s[CB.initted]! }
  }

  let J = 1
  let residual = z.reshape([B, 1, d])
  let qout = bl.full([B, 1, d], 0)
  let score = bl.full([B, 1], 0)
  // per path and layer: codes, losses and commitments so far (B, J, l)
  let idx: Tensor | undefined, lossPath: Tensor | undefined, commitPath: Tensor | undefined
  const losses: Record<string, Tensor> = {}

  for (let i = 0; i < nq; i++) {
    const lc = cfg.layers[i]!
    const key = opts.key ? layerKey(opts.key, i) : undefined
    const rows = residual.reshape([B * J, d])
    // a layer after the dropout cut-off leaves every path as it was (layer 0 is never dropped)
    const active = cut && i > 0 ? cut.ge(bl.scalar(i, 'int32')) : undefined
    let cb = codebookOf(i)
    if (lc.kmeans_init) {
      const old = cb
      cb = kmeansInit(lc, cb, (lc.use_cosine_sim ? l2norm(rows) : rows).expandDims(0), key, W)
      // a dropped layer never ran, so its k-means init did not either
      const kept = active
        ? { embed: where(active, cb.embed, old.embed), clusterSize: where(active, cb.clusterSize, old.clusterSize), embedAvg: where(active, cb.embedAvg, old.embedAvg), initted: where(active, cb.initted, old.initted) }
        : cb
      states.set(statePrefix(i), kept)
    }
    const codes = spec.qinco && i > 0 ? qincoCodes(spec.qinco, i - 1, params, cb.embed.reshape([lc.codebook_size, d]), qout.reshape([B * J, d])) : undefined
    const c = layerCandidates(
      {
        cfg: lc,
        training,
        freeze: opts.freezeCodebook ?? lc.freeze_codebook,
        temperature: opts.sampleCodebookTemp ?? lc.sample_codebook_temp,
        ...(key ? { key } : {}),
        where: W,
        topk: beam ? width : null,
        layout: [layout[0], layout[1], J],
      },
      rows,
      cb.embed,
      codes,
    )
    const k = beam ? width : 1
    const M = J * k
    const cq = keep ? where(keep.reshape([B, 1, 1]), c.quantized, 0) : c.quantized
    const cind = keep ? where(keep.reshape([B, 1]), c.ind, -1) : c.ind
    let nScore = score.expandDims(-1).sub(c.searchLoss.reshape([B, J, k]).mul(cfg.beam_score_weights[i]!)).reshape([B, M])
    let nRes = repeatPaths(residual, k).sub(cq.stopGradient().reshape([B, M, d]))
    let nQ = repeatPaths(qout, k).add(cq.reshape([B, M, d]))
    const lastOf = (prev: Tensor | undefined, now: Tensor) => {
      const col = now.reshape([B, M, 1])
      return prev ? concat([repeatPaths(prev, k), col], -1) : col
    }
    let nIdx = lastOf(idx, cind)
    let nLoss = lastOf(lossPath, c.loss)
    let nCommit = lastOf(commitPath, c.commitment)
    if (M > width) {
      const sel = topIndices(nScore, width)
      ;[nScore, nRes, nQ, nIdx, nLoss, nCommit] = [nScore, nRes, nQ, nIdx, nLoss, nCommit].map((t) => pickPaths(t, sel)) as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
    }
    const Jn = Math.min(M, width)
    if (active) {
      const padded = (prev: Tensor, value: number) => concat([prev, bl.full([B, J, 1], value, prev.dtype)], -1)
      nScore = where(active, nScore, score)
      nRes = where(active, nRes, residual)
      nQ = where(active, nQ, qout)
      nIdx = where(active, nIdx, padded(idx!, -1))
      nLoss = where(active, nLoss, padded(lossPath!, 0))
      nCommit = where(active, nCommit, padded(commitPath!, 0))
    }
    ;[score, residual, qout, idx, lossPath, commitPath, J] = [nScore, nRes, nQ, nIdx, nLoss, nCommit, Jn]
    const gate = (t: Tensor) => (active ? where(active, t, 0) : t)
    losses[`${layerPrefix(i)}codebook_diversity`] = gate(c.diversity)
    losses[`${layerPrefix(i)}orthogonal_reg`] = gate(c.orthogonal)
  }

  // the best path of every token
  const best = score.argmax(-1).expandDims(-1)
  const one = (t: Tensor) => pickPaths(t, best).squeeze(1)
  const quantized = one(qout)
  const indices = one(idx!)
  const lossBest = one(lossPath!)
  const commitBest = one(commitPath!)
  const overRows = (t: Tensor) => (keep ? where(keep.reshape([B, ...t.shape.slice(1).map(() => 1)]), t, 0).sum(0).div(keep.cast('float32').sum()) : t.mean(0))
  const allLosses = training ? overRows(lossBest) : bl.full([nq], 0)
  for (let i = 0; i < nq; i++) losses[`${layerPrefix(i)}commitment`] = training ? overRows(commitBest.index(-1, i)) : bl.scalar(0)

  const newState: Record<string, Tensor> = { ...state }
  const write = (p: string, s: CodebookState) => {
    const next: Record<string, Tensor> = { [CB.initted]: s.initted, [CB.clusterSize]: s.clusterSize, [CB.embedAvg]: s.embedAvg }
    if (state[`${p}${CB.embed}`]) next[CB.embed] = s.embed
    Object.assign(newState, prefixed(next, p))
  }
  if (training && beam) {
    const lc = cfg.layers[0]!
    const p = statePrefix(0)
    const cb = codebookOf(0)
    const hasDead = lc.threshold_ema_dead_code > 0
    if (lc.ema_update || hasDead) {
      const flat = (lc.use_cosine_sim ? l2norm(z) : z).expandDims(0)
      const stats = trackStatistics(cb, flat, indices.index(-1, 0).expandDims(0), lc.decay)
      const embed = lc.ema_update && !shared ? embedFromAverages(stats.clusterSize, stats.embedAvg, lc.eps, lc.use_cosine_sim) : cb.embed
      const key = opts.key ? layerKey(opts.key, 0) : undefined
      const dead = { ...(key ? { key } : {}), where: W }
      let buf = { embed, clusterSize: stats.clusterSize, embedAvg: stats.embedAvg }
      if (hasDead) buf = expireDead(lc, buf, flat, dead)
      if (shared) {
        // the shared codebook's end-of-step update; its saved inputs are layer 0's alone (see above)
        if (lc.ema_update) buf = { ...buf, embed: embedFromAverages(buf.clusterSize, buf.embedAvg, lc.eps, lc.use_cosine_sim) }
        if (hasDead) buf = expireDead(lc, buf, z.expandDims(0), opts.key ? { key: opts.key, where: W } : { where: W }, nq + 1)
      }
      states.set(p, { ...cb, ...buf })
    }
  }
  for (const [p, s] of states) write(p, s)
  return { quantized, indices, allLosses, losses, state: newState }
}
