import * as E from 'fp-ts/lib/Either.js'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { TesseraError, initLinear, linear, prefixed, random, scoped } from '@tessera/core'
import type { ApplyOptions, Init, Named, QuantizeResult, Quantizer } from '../quantizer.js'

/**
 * A pure function with (possibly no) parameters, placed before or after the quantizer of a
 * Sequential: the reference's non-quantizer modules (`nn.Linear`, activations, ...).
 */
export interface Stage {
  readonly kind: string
  readonly paramSpecs: Named<Aval>
  init(key: random.Key): Named<HostTensor>
  apply(params: Named<Tensor>, x: Tensor): Tensor
}

/** A parameterless stage from a traceable function of one tensor. */
export const fnStage = (kind: string, f: (x: Tensor) => Tensor): Stage => ({ kind, paramSpecs: {}, init: () => ({}), apply: (_p, x) => f(x) })

/** torch's `nn.Linear(in_features, out_features, bias)`: parameters `weight (out, in)` and `bias (out)`, torch's default init. */
export function linearStage(inFeatures: number, outFeatures: number, bias = true): Stage {
  const paramSpecs: Record<string, Aval> = { weight: { shape: [outFeatures, inFeatures], dtype: 'float32' } }
  if (bias) paramSpecs['bias'] = { shape: [outFeatures], dtype: 'float32' }
  return {
    kind: 'Linear',
    paramSpecs,
    init: (key) => {
      const p = initLinear(key, inFeatures, outFeatures, 'torch', bias)
      const out: Record<string, HostTensor> = { weight: p.weight }
      if (p.bias) out['bias'] = p.bias
      return out
    },
    apply: (params, x) => linear(x, { weight: params['weight']!, bias: bias ? params['bias'] : undefined }),
  }
}

export type SequentialPart = Stage | Quantizer

/** A quantizer has state and decodes indices; a stage has neither. */
export const isQuantizer = (p: SequentialPart): p is Quantizer => 'indicesToCodes' in p && 'stateSpecs' in p

export interface Sequential extends Quantizer<{ readonly kinds: readonly string[] }> {
  readonly kind: 'Sequential'
  readonly fns: readonly SequentialPart[]
  /** the position of the quantizer in `fns` */
  readonly quantizerIndex: number
  /** the quantizer itself: its indices are the combinator's */
  readonly inner: Quantizer
}

const prefix = (i: number) => `fns.${i}.`

/**
 * The reference's `Sequential` (utils.py): functions and exactly one quantizer, applied in order.
 * Stages map the running tensor; the quantizer's first output replaces it and its indices, losses
 * and state are the combinator's. Names nest under `fns.{i}.` as the reference's ModuleList does;
 * `extra['fns.{i}.output']` is what part i returned (the quantizer's is its `quantized`), and the
 * quantizer's own extras follow under its prefix. `indicesToCodes` decodes with the quantizer and
 * runs the stages after it, so it reproduces the combinator's output from its indices.
 */
export function sequential(fns: readonly SequentialPart[]): E.Either<TesseraError, Sequential> {
  const qs = fns.map((f, i) => (isQuantizer(f) ? i : -1)).filter((i) => i >= 0)
  if (qs.length !== 1)
    return E.left(new TesseraError('config', 'Sequential.fns', `must contain exactly one quantizer, got ${qs.length} among ${fns.length} parts`))
  const qi = qs[0]!
  const quantizer = fns[qi] as Quantizer
  const paramSpecs: Record<string, Aval> = {}
  fns.forEach((f, i) => Object.assign(paramSpecs, prefixed(f.paramSpecs, prefix(i))))
  const stateSpecs = prefixed(quantizer.stateSpecs, prefix(qi))

  const init = (key: random.Key): Init => {
    const keys = random.splitKey(key, fns.length)
    const params: Record<string, HostTensor> = {}
    let state: Record<string, HostTensor> = {}
    fns.forEach((f, i) => {
      if (isQuantizer(f)) {
        const s = f.init(keys[i]!)
        Object.assign(params, prefixed(s.params, prefix(i)))
        state = prefixed(s.state, prefix(i))
      } else Object.assign(params, prefixed(f.init(keys[i]!), prefix(i)))
    })
    return { params, state }
  }

  const runStages = (params: Named<Tensor>, x: Tensor, from: number, to: number, extra?: Record<string, Tensor>): Tensor => {
    for (let i = from; i < to; i++) {
      x = (fns[i] as Stage).apply(scoped(params, prefix(i)), x)
      if (extra) extra[`${prefix(i)}output`] = x
    }
    return x
  }

  const apply = (params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult => {
    const extra: Record<string, Tensor> = {}
    const before = runStages(params, x, 0, qi, extra)
    const r = quantizer.apply(scoped(params, prefix(qi)), scoped(state, prefix(qi)), before, opts)
    extra[`${prefix(qi)}output`] = r.quantized
    Object.assign(extra, prefixed(r.extra ?? {}, prefix(qi)))
    const out = runStages(params, r.quantized, qi + 1, fns.length, extra)
    return { quantized: out, indices: r.indices, loss: r.loss, losses: r.losses, state: prefixed(r.state, prefix(qi)), extra }
  }

  const indicesToCodes = (params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor => {
    const codes = quantizer.indicesToCodes(scoped(params, prefix(qi)), indices, state ? scoped(state, prefix(qi)) : undefined)
    return runStages(params, codes, qi + 1, fns.length)
  }

  return E.right({ kind: 'Sequential', config: { kinds: fns.map((f) => f.kind) }, fns, quantizerIndex: qi, inner: quantizer, paramSpecs, stateSpecs, init, apply, indicesToCodes })
}
