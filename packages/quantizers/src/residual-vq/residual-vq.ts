import * as E from 'fp-ts/lib/Either.js'
import type { Aval, Tensor } from '@tessera/core'
import { TesseraError, concat, prefixed, random, scoped, stack, where } from '@tessera/core'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { initProjection, projectIn, projectOut, projectionSpecs } from '../common/projection.js'
import type { Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import type { Residual } from '../residual/residual.js'
import { fixedDropoutCut, layerKey, layerPrefix, quantizeDropoutCut, residual } from '../residual/residual.js'
import { embedFromAverages } from '../vq/codebook.js'
import type { VQApplyOptions, VectorQuantize } from '../vq/vector-quantize.js'
import type { RVQApplyOptions } from './call-options.js'
import { checkRVQOptions } from './call-options.js'
import { CB, expireDead, makeVectorQuantize } from '../vq/vector-quantize.js'
import { BRIDGE_PREFIX } from '../vq/bridge.js'
import type { RankSync } from '../vq/sync.js'
import { codebookSync, rankSync } from '../vq/sync.js'
import type { RVQConfig } from './config.js'
import { decodeRVQ, pathSearchUnsupported } from './config.js'
import { searchPaths } from './path-search.js'
import { rewritingLoop } from './rewriting-loop.js'
import type { QincoShape } from './qinco.js'
import { initQinco, qincoCodes, qincoSpecs } from './qinco.js'

export type { RVQApplyOptions } from './call-options.js'

/** ResidualVQ's result: with an in-place codebook optimizer, the layers' rewritten parameters too. */
export interface RVQResult extends QuantizeResult {
  /**
   * Parameters this call rewrote, under `layers.{i}.`: each layer's codebook after its in-place
   * optimizer step, as VectorQuantize's `updatedParams` (adopt them before the outer update).
   */
  readonly updatedParams?: Named<Tensor>
}

/**
 * ResidualVQ: the residual combinator over VectorQuantize layers. A shared codebook is a different
 * algorithm (one codebook whose EMA statistics thread through every layer, `embed` recomputed
 * once after all layers), so it has its own loop here.
 */
export interface ResidualVQ extends Quantizer<RVQConfig> {
  readonly kind: 'ResidualVQ'
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: RVQApplyOptions): RVQResult
  /** int32 indices (b, ..., q) -> per-layer codes (q, b, ..., codebook_dim); index -1 (dropped layer) gives 0. */
  codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
  /** The layers' codebooks stacked (q, K, codebook_dim): the reference's `codebooks` (uniform sizes only). */
  codebooks(params: Named<Tensor>, state: Named<Tensor>): Tensor
}

const W = 'ResidualVQ'
/** What the reference's loop hands every VectorQuantize layer, besides training, key and world. */
const LAYER_OPTIONS = ['mask', 'sampleCodebookTemp', 'freezeCodebook', 'inputRequiresGrad']
const SHARED = layerPrefix(0)

export function makeResidualVQ(cfg: RVQConfig): ResidualVQ {
  const nq = cfg.num_quantizers
  const cd = cfg.codebook_dim
  const proj: Projection = { present: cfg.has_projections, bias: true, dim: cfg.dim, codebookDims: cd }
  const layers: VectorQuantize[] = cfg.layers.map(makeVectorQuantize)
  const dropout = cfg.quantize_dropout ? { cutoffIndex: cfg.quantize_dropout_cutoff_index, multipleOf: cfg.quantize_dropout_multiple_of } : null
  const combinator = (ls: readonly Quantizer[], drop = dropout): Residual =>
    residual(cfg, { kind: W, dim: cfg.dim, codebookDim: cd, layers: ls, projection: proj, channelFirst: false, quantizeDropout: drop, layerOptions: LAYER_OPTIONS })
  const inner = cfg.shared_codebook ? undefined : combinator(layers)
  // layers that rewrite their codebook parameters in their forward run in a loop that collects them (the config refuses a shared codebook here)
  const rewriting = cfg.layers[0]!.in_place_codebook_optimizer !== null
  // the reference hands one vq_bridge module to every layer: its parameters are tied, kept once under layers.0. (as torch's state dict
  // repeats them under every layer, like a shared codebook's) and handed to every layer
  const bridged = cfg.layers[0]!.vq_bridge !== null
  const isTiedCopy = (name: string) => bridged && name.startsWith('layers.') && !name.startsWith(SHARED) && name.includes(`.${BRIDGE_PREFIX}`)
  const layerParams = (params: Named<Tensor>, i: number): Named<Tensor> => {
    const own = scoped(params, layerPrefix(i))
    if (!bridged || i === 0) return own
    const tied = Object.entries(scoped(params, SHARED)).filter(([k]) => k.startsWith(BRIDGE_PREFIX))
    return { ...own, ...Object.fromEntries(tied) }
  }
  // a dropout seed fixes the last active layer: the layers up to it run as a residual quantizer of their own
  const prefixes = new Map<number, Residual>()
  const prefix = (last: number) => prefixes.get(last) ?? prefixes.set(last, combinator(layers.slice(0, last + 1), null)).get(last)!

  const sharedLayer = layers[0]!
  const paramSpecs: Record<string, Aval> = inner ? { ...inner.paramSpecs } : { ...projectionSpecs(proj), ...prefixed(sharedLayer.paramSpecs, SHARED) }
  for (const k of Object.keys(paramSpecs)) if (isTiedCopy(k)) delete paramSpecs[k]
  const stateSpecs: Record<string, Aval> = inner ? { ...inner.stateSpecs } : prefixed(sharedLayer.stateSpecs, SHARED)
  // QINCo: one MLP per layer after the first, `mlps.{q-1}.` (the config refuses it with a shared codebook)
  const qinco: QincoShape | undefined = cfg.implicit_neural_codebook ? { dim: cd, hidden: cfg.mlp.dim_hidden, depth: cfg.mlp.depth } : undefined
  if (qinco) for (let i = 0; i < nq - 1; i++) Object.assign(paramSpecs, qincoSpecs(qinco, i))

  const init = (key: random.Key): Init => {
    if (inner && qinco) {
      const [kl, km] = random.splitKey(key, 2) as [random.Key, random.Key]
      const base = inner.init(kl)
      const mk = random.splitKey(km, Math.max(nq - 1, 1))
      const mlps = Array.from({ length: nq - 1 }, (_, i) => initQinco(qinco, i, mk[i]!))
      return { params: Object.assign({ ...base.params }, ...mlps), state: base.state }
    }
    if (inner) {
      const base = inner.init(key)
      return bridged ? { params: Object.fromEntries(Object.entries(base.params).filter(([k]) => !isTiedCopy(k))), state: base.state } : base
    }
    const [kp, kl] = random.splitKey(key, 2) as [random.Key, random.Key]
    const l = sharedLayer.init(kl)
    return { params: { ...initProjection(proj, kp), ...prefixed(l.params, SHARED) }, state: prefixed(l.state, SHARED) }
  }

  /** Images (b, c, h, w) become (b, h·w, c) sequences; the reverse for per-token outputs. */
  const toSeq = (x: Tensor) => {
    if (!cfg.accept_image_fmap) return { x, back: (q: Tensor) => q, backIdx: (i: Tensor) => i }
    if (x.rank !== 4) throw new TesseraError('shape', W, `accept_image_fmap expects (b, c, h, w), got [${x.shape.join(',')}]`)
    const lay = packLayout(x, true, cfg.dim, W)
    const [b, , hh, ww] = x.shape as [number, number, number, number]
    return { x: lay.x, back: lay.unpack, backIdx: (i: Tensor) => i.reshape([b, hh, ww, ...i.shape.slice(2)]) }
  }

  const sharedApply = (params: Named<Tensor>, state: Named<Tensor>, xs: Tensor, opts: VQApplyOptions & { mask?: Tensor }, call: { targets?: Tensor; cut?: number } = {}): QuantizeResult => {
    const { targets } = call
    const lay = packLayout(xs, false, cfg.dim, W)
    const z = projectIn(proj, params, lay.x)
    const lp = scoped(params, SHARED)
    let s: Named<Tensor> = scoped(state, SHARED)
    // with target codes the reference skips quantize dropout
    const dropping = opts.training && !!dropout && !targets && call.cut === undefined
    if (dropping && !opts.key) throw new TesseraError('input', `${W}.quantize_dropout`, 'training with quantize_dropout needs a random key (opts.key)')
    const cut = call.cut !== undefined ? xs.builder.scalar(call.cut, 'int32') : dropping ? quantizeDropoutCut(opts.key!, nq, dropout!) : undefined
    let res = z
    let out: Tensor | undefined
    const indices: Tensor[] = [], layerLosses: Tensor[] = [], residuals: Tensor[] = []
    const losses: Record<string, Tensor> = {}
    for (let i = 0; i < nq; i++) {
      residuals.push(res)
      const r = sharedLayer.apply(lp, s, res, {
        ...opts,
        ...(opts.key ? { key: layerKey(opts.key, i) } : {}),
        ...(targets ? { indices: targets.index(-1, i) } : {}),
        manualEmaUpdate: true,
      })
      const active = cut ? cut.ge(xs.builder.scalar(i, 'int32')) : undefined
      const q = active ? where(active, r.quantized, 0) : r.quantized
      indices.push(active ? where(active, r.indices, -1) : r.indices)
      layerLosses.push(active ? where(active, r.loss, 0) : r.loss)
      for (const [k, v] of Object.entries(r.losses)) losses[`${layerPrefix(i)}${k}`] = active ? where(active, v, 0) : v
      const prev = s
      s = active ? Object.fromEntries(Object.entries(r.state).map(([k, v]) => [k, where(active, v, prev[k]!)])) : r.state
      // with target codes the reference's loop moves on before the residual update (see targetResult)
      if (targets) continue
      res = res.sub(q.stopGradient())
      out = out ? out.add(q) : q
    }
    if (opts.training) {
      // the reference recomputes the shared embed and revives dead codes once per step, frozen or not
      const lc = cfg.layers[0]!
      let buf = { embed: s[CB.embed]!, clusterSize: s[CB.clusterSize]!, embedAvg: s[CB.embedAvg]! }
      if (lc.ema_update) buf = { ...buf, embed: embedFromAverages(buf.clusterSize, buf.embedAvg, lc.eps, lc.use_cosine_sim) }
      if (lc.threshold_ema_dead_code > 0) {
        // only the layers that ran, whose inputs the reference saves: a known cut slices them, a
        // cut drawn from the key masks the later layers' rows out of the draw
        const ran = call.cut !== undefined ? residuals.slice(0, call.cut + 1) : residuals
        const all = stack(ran, 0).reshape([1, -1, cd])
        const perLayer = all.shape[1]! / ran.length
        const rowMask = call.cut === undefined && cut ? xs.builder.iota([ran.length, perLayer], 0).le(cut).reshape([1, -1]) : undefined
        const sync = codebookSync(lc, rankSync(opts.world, xs.builder, W))
        buf = expireDead(lc, buf, all, { ...(opts.key ? { key: opts.key } : {}), ...(rowMask ? { rowMask } : {}), ...(sync ? { sync, index: stackedRowIndex(sync.world, ran.length, perLayer) } : {}), where: W }, nq + 1)
      }
      // a learnable codebook lives in params (no EMA, no revival: the config refuses it), so only the statistics go back
      s = { ...s, ...(sharedLayer.embedInParams ? {} : { [CB.embed]: buf.embed }), [CB.clusterSize]: buf.clusterSize, [CB.embedAvg]: buf.embedAvg }
    }
    const allLosses = stack(layerLosses, 0)
    if (targets) return targetResult(params, lay, z, targets, allLosses, losses, prefixed(s, SHARED))
    return {
      quantized: lay.unpack(projectOut(proj, params, out!)),
      indices: lay.unpackTokens(stack(indices, -1)),
      loss: allLosses.sum(),
      losses,
      state: prefixed(s, SHARED),
      extra: { all_losses: allLosses, project_in_output: z },
    }
  }

  /**
   * A call given target codes (`indices`), as the reference's loop reads: each layer takes the
   * projected input itself with its own column of targets (the loop moves on before the residual
   * update), and the call returns the layers' summed cross entropies. The reference 1.31.0 stops
   * earlier, unpacking VectorQuantize's two results into three; docs/QUANTIZERS.md, difference 12.
   */
  const targetApply = (params: Named<Tensor>, state: Named<Tensor>, xs: Tensor, opts: VQApplyOptions & { mask?: Tensor }, targets: Tensor): RVQResult => {
    const lay = packLayout(xs, false, cfg.dim, W)
    const z = projectIn(proj, params, lay.x)
    const next: Record<string, Tensor> = { ...state }
    const losses: Record<string, Tensor> = {}
    const updated: Record<string, Tensor> = {}
    const ces = layers.map((layer, i) => {
      const r = layer.apply(layerParams(params, i), scoped(state, layerPrefix(i)), z, {
        ...opts,
        ...(opts.key ? { key: layerKey(opts.key, i) } : {}),
        indices: targets.index(-1, i),
      })
      for (const [k, v] of Object.entries(r.losses)) losses[`${layerPrefix(i)}${k}`] = v
      Object.assign(next, prefixed(r.state, layerPrefix(i)))
      Object.assign(updated, prefixed(r.updatedParams ?? {}, layerPrefix(i)))
      return r.loss
    })
    const res = targetResult(params, lay, z, targets, stack(ces, 0), losses, next)
    return Object.keys(updated).length > 0 ? { ...res, updatedParams: updated } : res
  }

  /** The greedy loop over layers that rewrite their parameters; `fixed` is a seed's cut-off, else the key draws one in training. */
  const rewritingApply = (params: Named<Tensor>, state: Named<Tensor>, xs: Tensor, opts: VQApplyOptions & { mask?: Tensor }, fixed?: number): RVQResult => {
    const lay = packLayout(xs, false, cfg.dim, W)
    const z = projectIn(proj, params, lay.x)
    const dropping = opts.training && !!dropout && fixed === undefined
    if (dropping && !opts.key) throw new TesseraError('input', `${W}.quantize_dropout`, 'training with quantize_dropout needs a random key (opts.key)')
    const cut = fixed !== undefined ? xs.builder.scalar(fixed, 'int32') : dropping ? quantizeDropoutCut(opts.key!, nq, dropout!) : undefined
    const r = rewritingLoop(layers, params, (i) => layerParams(params, i), state, z, opts, cut)
    return {
      quantized: lay.unpack(projectOut(proj, params, r.quantized)),
      indices: lay.unpackTokens(r.indices),
      loss: r.allLosses.sum(),
      losses: r.losses,
      state: r.state,
      extra: { all_losses: r.allLosses, project_in_output: z },
      ...(Object.keys(r.updatedParams).length > 0 ? { updatedParams: r.updatedParams } : {}),
    }
  }

  /** What a call with target codes returns: `quantized` is project_out of zeros, as the reference's `quantized_out` is never added to. */
  const targetResult = (params: Named<Tensor>, lay: ReturnType<typeof packLayout>, z: Tensor, targets: Tensor, ces: Tensor, losses: Record<string, Tensor>, state: Named<Tensor>): QuantizeResult => {
    // the reference asserts that no target is -1 (a dropped layer); a traced call says it with a NaN loss
    const dropped = targets.eq(-1).cast('float32').max().gt(0)
    return {
      quantized: lay.unpack(projectOut(proj, params, z.builder.full(z.shape, 0))),
      indices: targets,
      loss: where(dropped, NaN, ces.sum()),
      losses,
      state,
      extra: { all_losses: ces, project_in_output: z },
    }
  }

  /**
   * A prefix quantizer's result as the whole one's: the layers after the cut get index -1, zero
   * losses and their state as it was (the prefix hands the whole state through).
   */
  const padDropped = (r: QuantizeResult, last: number): QuantizeResult => {
    const kept = last + 1
    if (kept >= nq) return r
    const bl = r.indices.builder
    const indices = concat([r.indices, bl.full([...r.indices.shape.slice(0, -1), nq - kept], -1, 'int32')], -1)
    const losses: Record<string, Tensor> = { ...r.losses }
    const names = Object.keys(r.losses).filter((k) => k.startsWith(layerPrefix(0))).map((k) => k.slice(layerPrefix(0).length))
    for (let i = kept; i < nq; i++) for (const k of names) losses[`${layerPrefix(i)}${k}`] = bl.scalar(0)
    const allLosses = concat([r.extra!['all_losses']!, bl.full([nq - kept], 0)], 0)
    return { ...r, indices, losses, extra: { ...r.extra, all_losses: allLosses } }
  }

  /** The beam width of a call: its own, else the config's for the mode; the reference searches only when it is over 1. */
  const widthOf = (opts: RVQApplyOptions): number => {
    const w = opts.beamSize ?? (opts.training ? cfg.beam_size : cfg.eval_beam_size) ?? 1
    const smallest = Math.min(...cfg.codebook_sizes)
    if (!Number.isInteger(w) || w < 1 || w > smallest)
      throw new TesseraError('input', `${W}.beamSize`, `must be an integer from 1 to the smallest codebook_size (${smallest}), got ${w}`)
    if (w > 1 && !(cfg.layers[0]!.commitment_weight > 0))
      throw new TesseraError('input', `${W}.beamSize`, 'beam search scores paths by the commitment loss: commitment_weight must be > 0')
    const unmodelled = pathSearchUnsupported(cfg.layers[0]!)
    if (w > 1 && unmodelled)
      throw new TesseraError('input', `${W}.beamSize`, `beam search (width ${w}) does not model the layer option ${unmodelled}; use the greedy loop (beamSize: 1)`)
    return w
  }

  /** Beam search or QINCo: the path-search loop over (b, n, dim) sequences. */
  const searchApply = (params: Named<Tensor>, state: Named<Tensor>, xs: Tensor, opts: VQApplyOptions & { mask?: Tensor }, width: number, cut?: number): QuantizeResult => {
    const lay = packLayout(xs, false, cfg.dim, W)
    const z = projectIn(proj, params, lay.x)
    const [b, n] = z.shape as [number, number]
    const spec = { cfg, width, beam: width > 1, ...(qinco ? { qinco } : {}), ...(cut !== undefined ? { fixedCut: cut } : {}), where: W }
    const r = searchPaths(spec, params, state, z.reshape([b * n, cd]), [b, n], opts)
    return {
      quantized: lay.unpack(projectOut(proj, params, r.quantized.reshape([b, n, cd]))),
      indices: lay.unpackTokens(r.indices.reshape([b, n, nq])),
      loss: r.allLosses.sum(),
      losses: r.losses,
      state: r.state,
      extra: { all_losses: r.allLosses, project_in_output: z },
    }
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: RVQApplyOptions): RVQResult => {
    const call = checkRVQOptions(opts, x, nq, cfg.accept_image_fmap, W)
    const seq = toSeq(x)
    const width = widthOf(opts)
    // what the reference's loop hands every layer; ResidualVQ's own options stop here
    const layerOpts: VQApplyOptions & { mask?: Tensor } = {
      training: opts.training,
      ...(opts.key !== undefined ? { key: opts.key } : {}),
      ...(opts.world !== undefined ? { world: opts.world } : {}),
      ...(opts.inputRequiresGrad !== undefined ? { inputRequiresGrad: opts.inputRequiresGrad } : {}),
      ...(opts.sampleCodebookTemp !== undefined ? { sampleCodebookTemp: opts.sampleCodebookTemp } : {}),
      // the reference's forward always hands its layers freeze_codebook (default False), which overrides theirs
      freezeCodebook: opts.freezeCodebook ?? false,
      ...(call.mask ? { mask: call.mask } : {}),
    }
    // the reference draws its cut-off from the seed only in a training call with quantize dropout and no targets
    const cut = opts.randQuantizeDropoutFixedSeed !== undefined && opts.training && dropout && nq > 1 && !call.targets ? fixedDropoutCut(opts.randQuantizeDropoutFixedSeed, dropout, nq) : undefined
    let r: RVQResult
    if ((width > 1 || qinco) && opts.world !== undefined && opts.training)
      throw new TesseraError('input', `${W}.world`, `${qinco ? 'QINCo (implicit_neural_codebook)' : 'beam search'} does not synchronise its codebook statistics across ranks; train it in one process`)
    if (width > 1 && call.mask)
      throw new TesseraError('input', `${W}.mask`, `not supported with beam search (width ${width}): the reference's layers then get (b, n, beams, d) inputs its mask cannot select, and it crashes; use the greedy loop (beamSize: 1)`)
    if ((width > 1 || qinco) && call.targets)
      throw new TesseraError('input', `${W}.indices`, `not supported with ${qinco ? 'QINCo (implicit_neural_codebook)' : `beam search (width ${width})`} yet; use the greedy loop${qinco ? ' without implicit_neural_codebook' : ' (beamSize: 1)'}`)
    if (width > 1 || qinco) r = searchApply(params, state, seq.x, layerOpts, width, cut)
    else if (call.targets) r = inner ? targetApply(params, state, seq.x, layerOpts, call.targets) : sharedApply(params, state, seq.x, layerOpts, { targets: call.targets })
    else if (inner && (rewriting || bridged)) r = rewritingApply(params, state, seq.x, layerOpts, cut)
    else if (inner && cut !== undefined) r = padDropped(prefix(cut).apply(params, state, seq.x, layerOpts), cut)
    else if (inner) r = inner.apply(params, state, seq.x, layerOpts)
    else r = sharedApply(params, state, seq.x, layerOpts, cut !== undefined ? { cut } : {})
    const indices = seq.backIdx(r.indices)
    // the reference derives all_codes after the step, from the codebooks as the step left them (a call with targets returns before)
    const extra = opts.returnAllCodes && !call.targets ? { ...r.extra, all_codes: codesFromIndices({ ...params, ...r.updatedParams }, indices, r.state) } : r.extra
    return { ...r, quantized: seq.back(r.quantized), indices, ...(extra ? { extra } : {}) }
  }

  const sharedEmbed = (params: Named<Tensor>, state: Named<Tensor> | undefined, i: number): Tensor => {
    const name = `${layerPrefix(cfg.shared_codebook ? 0 : i)}${CB.embed}`
    const e = state?.[name] ?? params[name]
    if (!e) throw new TesseraError('input', `${W}.indicesToCodes`, `missing ${name} (pass the state)`)
    return e
  }

  const codesFromIndices = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (qinco) return qincoCodesFromIndices(params, indices, state)
    if (inner) return inner.codesFromIndices(params, indices, state)
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${W}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    const given = indices.shape[indices.rank - 1]!
    if (indices.rank < 2 || given > nq || (given < nq && !dropout))
      throw new TesseraError('shape', `${W}.indicesToCodes`, `indices must be (b, ..., ${nq})${dropout ? ' or fewer layers' : ''}, got [${indices.shape.join(',')}]`)
    const K = cfg.codebook_sizes[0]!
    const embed = sharedEmbed(params, state, 0).reshape([K, cd])
    const codes = Array.from({ length: nq }, (_, i) => {
      if (i >= given) return undefined
      const raw = indices.index(-1, i)
      const dropped = raw.eq(-1)
      return where(dropped.expandDims(-1), 0, embed.gather(where(dropped, 0, raw), 0))
    })
    const zeros = codes[0]!.mul(0)
    return stack(codes.map((c) => c ?? zeros), 0)
  }

  /**
   * QINCo's codes layer by layer: layer q's codebook comes from its MLP and the sum of the earlier
   * layers' codes. A dropped layer (-1) looks up code 0 for that sum, as the reference does, and
   * gives 0 in the result.
   */
  const qincoCodesFromIndices = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    const w = `${W}.indicesToCodes`
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', w, `indices must be int32, got ${indices.dtype}`)
    const given = indices.shape[indices.rank - 1]!
    if (indices.rank < 2 || given > nq || (given < nq && !dropout))
      throw new TesseraError('shape', w, `indices must be (b, ..., ${nq})${dropout ? ' or fewer layers' : ''}, got [${indices.shape.join(',')}]`)
    const lead = indices.shape.slice(0, -1)
    const flat = indices.reshape([-1, given])
    const R = flat.shape[0]!
    let sum: Tensor | undefined
    const codes: Tensor[] = []
    for (let i = 0; i < nq; i++) {
      const K = cfg.codebook_sizes[i]!
      const raw = i < given ? flat.index(-1, i) : flat.builder.full([R], -1, 'int32')
      const dropped = raw.eq(-1)
      const safe = where(dropped, 0, raw)
      const embed = sharedEmbed(params, state, i).reshape([K, cd])
      const c = i === 0 ? embed.gather(safe, 0) : qincoCodes(qinco!, i - 1, params, embed, sum!).reshape([R * K, cd]).gather(safe.add(flat.builder.iota([R], 0).mul(K)), 0)
      sum = sum ? sum.add(c) : c
      codes.push(where(dropped.expandDims(-1), 0, c))
    }
    return stack(codes, 0).reshape([nq, ...lead, cd])
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor =>
    projectOut(proj, params, codesFromIndices(params, indices, state).sum(0))

  const codebooks = (params: Named<Tensor>, state: Named<Tensor>): Tensor => {
    if (new Set(cfg.codebook_sizes).size !== 1) throw new TesseraError('input', `${W}.codebooks`, 'codebooks differ in size; there is no stacked view')
    return stack(
      Array.from({ length: nq }, (_, i) => sharedEmbed(params, state, i).squeeze(0)),
      0,
    )
  }

  return { kind: 'ResidualVQ', config: cfg, paramSpecs, stateSpecs, init, apply, indicesToCodes, codesFromIndices, codebooks }
}

/**
 * Where this rank's rows of the layers' stacked residuals (nq, m) sit among every rank's: the
 * global batch stacks each layer's rows of all ranks (rank order), so row j of layer l is
 * l·(size·m) + rank·m + j.
 */
function stackedRowIndex(world: RankSync, nq: number, m: number): Tensor {
  const b = world.rank.builder
  return b.iota([nq, m], 0).mul(world.size * m).add(world.rank.mul(m)).add(b.iota([nq, m], 1)).reshape([nq * m])
}

/** Build a ResidualVQ from the reference's keyword arguments; a bad config is a Left naming the field. */
export const residualVQ = (options: unknown): E.Either<TesseraError, ResidualVQ> => E.map(makeResidualVQ)(decodeRVQ(options))

