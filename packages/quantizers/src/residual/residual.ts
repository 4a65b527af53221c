import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { LAYER_STREAM, TesseraError, foldKey, prefixed, random, scoped, stack, where } from '@tessera/core'
import { packLayout } from '../common/layout.js'
import type { Projection } from '../common/projection.js'
import { initProjection, projectIn, projectOut, projectionSpecs } from '../common/projection.js'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'
import { APPLY_OPTION_NAMES, checkOptionNames } from '../common/option-names.js'
import { pythonRandrange } from '../common/python-random.js'

/**
 * Residual quantization (Algorithm 1 of SoundStream) as a combinator over any quantizers that
 * take (b, n, codebook_dim): layer q quantizes what the earlier layers left over, and the output is
 * the sum of the layers' outputs. ResidualFSQ, ResidualLFQ (and ResidualVQ) are this plus options.
 */
export interface ResidualSpec {
  readonly kind: string
  readonly dim: number
  readonly codebookDim: number
  readonly layers: readonly Quantizer[]
  readonly projection: Projection
  /** Channel-first input (b, d, ...); indices then come back as (b, q, ...). */
  readonly channelFirst: boolean
  /** Layer q sees residual / scales[q] and its output is multiplied by scales[q] (state buffer `scales`, (q, codebookDim)). */
  readonly scales?: readonly (readonly number[])[]
  /** tanh soft clamp after project_in, per codebook dimension (state buffer `soft_clamp_input_value`). */
  readonly softClamp?: readonly number[] | null
  /** Structured quantize dropout in training (needs a key): layers after a random cut-off are skipped. */
  readonly quantizeDropout?: QuantizeDropout | null
  /** Per-call options besides training, key and world that the layers are handed; a call with any other key is refused by name. */
  readonly layerOptions?: readonly string[]
}

/** The combinator's own per-call options (the reference's forward arguments), never handed to the layers. */
export interface ResidualCallOptions {
  /** `return_all_codes`: `extra.all_codes`, the per-layer codes (q, b, ..., codebookDim) of this call's indices (codesFromIndices). */
  readonly returnAllCodes?: boolean
  /**
   * `rand_quantize_dropout_fixed_seed`: in a training call with quantize dropout, the last active
   * layer is Python's `random.Random(seed).randrange(cutoff, layers)` (rounded up to the
   * multiple), as the reference draws it, instead of a draw from the key.
   */
  readonly randQuantizeDropoutFixedSeed?: number
}

const OWN_OPTIONS = ['returnAllCodes', 'randQuantizeDropoutFixedSeed'] as const

/** Throws a TesseraError naming `${where}.<option>` for a non-boolean returnAllCodes or a seed that is not a safe integer (ResidualVQ's checks share it). */
export function checkResidualCallOptions(opts: ResidualCallOptions, where: string): void {
  if (opts.returnAllCodes !== undefined && typeof opts.returnAllCodes !== 'boolean')
    throw new TesseraError('input', `${where}.returnAllCodes`, `must be a boolean, got ${typeof opts.returnAllCodes}`)
  const seed = opts.randQuantizeDropoutFixedSeed
  if (seed !== undefined && (typeof seed !== 'number' || !Number.isSafeInteger(seed)))
    throw new TesseraError('input', `${where}.randQuantizeDropoutFixedSeed`, `must be an integer (a safe one), got ${String(seed)}`)
}

export interface QuantizeDropout {
  /** the first layer that may be the last active one */
  readonly cutoffIndex: number
  /** the number of active layers is rounded up to a multiple of this */
  readonly multipleOf: number
}

export interface Residual<C = unknown> extends Quantizer<C> {
  readonly spec: ResidualSpec
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions & ResidualCallOptions): QuantizeResult
  /** int32 indices (b, ..., q) -> per-layer codes (q, b, ..., codebookDim), scaled; index -1 gives 0. */
  codesFromIndices(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
}

export const layerPrefix = (i: number) => `layers.${i}.`

/** A different i32[2] key per use `i` of a traced key (layer i, or 1 << 20 for the dropout cut-off). */
export const layerKey = (key: Tensor, i: number): Tensor => foldKey(key, i + 1, LAYER_STREAM)

/** The index of the last active layer of `layers` in a quantize-dropout step, as a traced int32 scalar. */
export function quantizeDropoutCut(key: Tensor, layers: number, qd: QuantizeDropout): Tensor {
  const span = layers - qd.cutoffIndex
  const u = key.builder.randomUniform(layerKey(key, 1 << 20), [])
  let r = u.mul(span).floor().cast('int32').minimum(span - 1).add(qd.cutoffIndex)
  if (qd.multipleOf !== 1) r = r.add(qd.multipleOf).idiv(qd.multipleOf).mul(qd.multipleOf).sub(1)
  return r
}

/** The last active layer the reference's quantize dropout picks from `rand_quantize_dropout_fixed_seed`, rounded up to the multiple as the key's draw is. */
export function fixedDropoutCut(seed: number, qd: QuantizeDropout, layers: number): number {
  const r = pythonRandrange(seed, qd.cutoffIndex, layers)
  return qd.multipleOf === 1 ? r : Math.ceil((r + 1) / qd.multipleOf) * qd.multipleOf - 1
}

export function residual<C>(config: C, spec: ResidualSpec): Residual<C> {
  const nq = spec.layers.length
  const cd = spec.codebookDim
  if (nq < 1) throw new TesseraError('config', `${spec.kind}.num_quantizers`, 'needs at least one layer')

  const paramSpecs: Record<string, Aval> = projectionSpecs(spec.projection)
  const stateSpecs: Record<string, Aval> = {}
  spec.layers.forEach((l, i) => {
    Object.assign(paramSpecs, prefixed(l.paramSpecs, layerPrefix(i)))
    Object.assign(stateSpecs, prefixed(l.stateSpecs, layerPrefix(i)))
  })
  if (spec.scales) stateSpecs['scales'] = { shape: [nq, cd], dtype: 'float32' }
  if (spec.softClamp) stateSpecs['soft_clamp_input_value'] = { shape: [cd], dtype: 'float32' }

  const init = (key: random.Key): Init => {
    const keys = random.splitKey(key, nq + 1)
    const params: Record<string, HostTensor> = initProjection(spec.projection, keys[nq]!)
    const state: Record<string, HostTensor> = {}
    spec.layers.forEach((l, i) => {
      const li = l.init(keys[i]!)
      Object.assign(params, prefixed(li.params, layerPrefix(i)))
      Object.assign(state, prefixed(li.state, layerPrefix(i)))
    })
    if (spec.scales) state['scales'] = { shape: [nq, cd], dtype: 'float32', data: Float32Array.from(spec.scales.flat()) }
    if (spec.softClamp) state['soft_clamp_input_value'] = { shape: [cd], dtype: 'float32', data: Float32Array.from(spec.softClamp) }
    return { params, state }
  }


  const optionNames = [...APPLY_OPTION_NAMES, ...OWN_OPTIONS, ...(spec.layerOptions ?? [])]
  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions & ResidualCallOptions): QuantizeResult => {
    checkOptionNames(opts, optionNames, spec.kind)
    checkResidualCallOptions(opts, spec.kind)
    const { returnAllCodes, randQuantizeDropoutFixedSeed: seed, ...shared } = opts
    const layout = packLayout(x, spec.channelFirst, spec.dim, spec.kind)
    const projected = projectIn(spec.projection, params, layout.x)
    let h = projected
    if (spec.softClamp) {
      const c = state['soft_clamp_input_value']!
      h = h.div(c).tanh().mul(c)
    }
    const dropping = opts.training && !!spec.quantizeDropout && nq > 1
    if (dropping && seed === undefined && !opts.key)
      throw new TesseraError('input', `${spec.kind}.quantize_dropout`, 'training with quantize_dropout needs a random key (opts.key) or randQuantizeDropoutFixedSeed')
    const cut = !dropping
      ? undefined
      : seed !== undefined
        ? x.builder.scalar(fixedDropoutCut(seed, spec.quantizeDropout!, nq), 'int32')
        : quantizeDropoutCut(opts.key!, nq, spec.quantizeDropout!)
    let res = h
    let out: Tensor | undefined
    const indices: Tensor[] = []
    const layerLosses: Tensor[] = []
    const losses: Record<string, Tensor> = {}
    const newState: Record<string, Tensor> = { ...state }
    const extra: Record<string, Tensor> = { project_in_output: projected }
    spec.layers.forEach((layer, i) => {
      const scale = spec.scales ? state['scales']!.index(0, i) : undefined
      const input = scale ? res.div(scale) : res
      // the per-call options the layers understand (spec.layerOptions, checked above) pass through
      // unchanged; only the key is made distinct per layer
      const { key: _callKey, ...callOpts } = shared
      const sub = layer.apply(scoped(params, layerPrefix(i)), scoped(state, layerPrefix(i)), input, {
        ...callOpts,
        ...(opts.key ? { key: layerKey(opts.key, i) } : {}),
      })
      let q = scale ? sub.quantized.mul(scale) : sub.quantized
      let idx = sub.indices
      let loss = sub.loss
      const active = cut ? cut.ge(x.builder.scalar(i, 'int32')) : undefined
      if (active) {
        q = where(active, q, 0)
        idx = where(active, idx, -1)
        loss = where(active, loss, 0)
      }
      res = res.sub(q.stopGradient())
      out = out ? out.add(q) : q
      indices.push(idx)
      layerLosses.push(loss)
      for (const [k, v] of Object.entries(sub.losses)) losses[`${layerPrefix(i)}${k}`] = active ? where(active, v, 0) : v
      // a skipped layer keeps its state (its statistics did not see this batch)
      for (const [k, v] of Object.entries(sub.state)) {
        const old = state[`${layerPrefix(i)}${k}`]!
        newState[`${layerPrefix(i)}${k}`] = active && v !== old ? where(active.broadcastTo(v.shape), v, old) : v
      }
      extra[`layer${i}_input`] = input
      extra[`layer${i}_output`] = sub.quantized
    })
    extra['quantized_before_project_out'] = out!
    const quantized = layout.unpack(projectOut(spec.projection, params, out!))
    let allIdx = layout.unpackTokens(stack(indices, -1))
    if (spec.channelFirst) allIdx = allIdx.moveAxis(-1, 1)
    const allLosses = stack(layerLosses, 0)
    extra['all_losses'] = allLosses
    // as the reference, from the indices this call returns (dropped layers give 0) and the state it leaves
    if (returnAllCodes) extra['all_codes'] = codesFromIndices(params, allIdx, newState)
    return { quantized, indices: allIdx, loss: allLosses.sum(), losses, state: newState, extra }
  }

  const codesFromIndices = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    if (indices.dtype !== 'int32') throw new TesseraError('dtype', `${spec.kind}.indicesToCodes`, `indices must be int32, got ${indices.dtype}`)
    const idxLast = spec.channelFirst ? indices.moveAxis(1, -1) : indices
    if (idxLast.rank < 2 || idxLast.shape[idxLast.rank - 1]! > nq)
      throw new TesseraError('shape', `${spec.kind}.indicesToCodes`, `indices must be (b, ..., q) with q <= ${nq}, got [${indices.shape.join(',')}]`)
    const b = idxLast.shape[0]!, given = idxLast.shape[idxLast.rank - 1]!
    if (given < nq && !spec.quantizeDropout)
      throw new TesseraError('shape', `${spec.kind}.indicesToCodes`, `got indices for ${given} of ${nq} layers; coarser indices need quantize_dropout`)
    const spatial = idxLast.shape.slice(1, -1)
    const flat = idxLast.reshape([b, -1, given])
    const codes = spec.layers.map((layer, i) => {
      if (i >= given) return undefined
      const raw = flat.index(-1, i)
      const dropped = raw.eq(-1)
      const safe = where(dropped, 0, raw)
      let c = layer.indicesToCodes(scoped(params, layerPrefix(i)), safe, state ? scoped(state, layerPrefix(i)) : undefined)
      c = where(dropped.expandDims(-1), 0, c)
      if (spec.scales) c = c.mul(state?.['scales'] ? state['scales'].index(0, i) : x0(c, spec.scales[i]!))
      return c
    })
    const zeros = codes.find((c) => c !== undefined)!.mul(0)
    const all = stack(codes.map((c) => c ?? zeros), 0) // (q, b, N, d)
    return all.reshape([nq, b, ...spatial, cd])
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    const summed = projectOut(spec.projection, params, codesFromIndices(params, indices, state).sum(0))
    return spec.channelFirst ? summed.moveAxis(-1, 1) : summed
  }

  return { kind: spec.kind, config, spec, paramSpecs, stateSpecs, init, apply, indicesToCodes, codesFromIndices }
}

const x0 = (t: Tensor, data: readonly number[]) => t.builder.constant(data, [data.length], 'float32')
