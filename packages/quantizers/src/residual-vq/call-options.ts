import type { Tensor } from '@tessera/core'
import { TesseraError, fmtShape } from '@tessera/core'
import type { ApplyOptions } from '../quantizer.js'
import { checkOptionNames } from '../common/option-names.js'
import type { ResidualCallOptions } from '../residual/residual.js'
import { checkResidualCallOptions } from '../residual/residual.js'

/**
 * ResidualVQ's per-call options: the reference's `ResidualVQ.forward` keyword arguments in
 * camelCase, and nothing else (`returnAllCodes` and `randQuantizeDropoutFixedSeed` as every
 * residual combinator takes them). They are checked by name at the call boundary, since a call
 * from plain JavaScript could otherwise hand a layer options the reference's ResidualVQ never
 * passes it.
 */
export interface RVQApplyOptions extends ApplyOptions, ResidualCallOptions {
  /** bool (b, n): tokens that take part; every layer gets it (EMA statistics, k-means, losses), masked-out tokens get index -1 and a zero code. */
  readonly mask?: Tensor
  /** int32 (b, n, q) target codes: the call returns the sum of the layers' cross entropies as `loss` (see docs/QUANTIZERS.md). */
  readonly indices?: Tensor
  /** Overrides the layers' `sample_codebook_temp` for this call. */
  readonly sampleCodebookTemp?: number
  /** Freezes every layer's codebook for this call (no EMA, no dead-code revival). */
  readonly freezeCodebook?: boolean
  /** Beam width for this call (default: the config's beam_size in training, eval_beam_size in eval); 1 is greedy. */
  readonly beamSize?: number
  /**
   * Whether the input carries a gradient (torch's `x.requires_grad`, which the layers' inputs
   * inherit); the layers route gradients only then. Default true (docs/QUANTIZERS.md, difference 8).
   */
  readonly inputRequiresGrad?: boolean
}

/** GroupedResidualVQ's forward takes fewer arguments than ResidualVQ's: no beam width, no dropout seed. */
export type GroupedRVQApplyOptions = Omit<RVQApplyOptions, 'beamSize' | 'randQuantizeDropoutFixedSeed'>

/** The reference's `ResidualVQ.forward` arguments (and ApplyOptions, which stand for module state). */
export const RVQ_OPTION_NAMES: readonly string[] = [
  'training',
  'key',
  'world',
  'inputRequiresGrad',
  'mask',
  'indices',
  'returnAllCodes',
  'sampleCodebookTemp',
  'freezeCodebook',
  'beamSize',
  'randQuantizeDropoutFixedSeed',
]

/** The reference's `GroupedResidualVQ.forward` arguments: it draws the dropout seed itself and takes no beam width. */
export const GROUPED_RVQ_OPTION_NAMES: readonly string[] = RVQ_OPTION_NAMES.filter((k) => k !== 'beamSize' && k !== 'randQuantizeDropoutFixedSeed')

const isTensor = (v: unknown): v is Tensor => typeof v === 'object' && v !== null && 'builder' in v && 'shape' in v && 'dtype' in v

const show = (t: Tensor) => `${t.dtype}${fmtShape(t.shape)}`

/** What the path-independent checks of a call found. */
export interface CheckedRVQCall {
  readonly mask?: Tensor
  readonly targets?: Tensor
}

/**
 * Checks a ResidualVQ call's options against the input `x` (before the image layout is packed).
 * `mask` needs a (b, n, dim) sequence, since the reference's layers refuse one for feature maps;
 * target `indices` are (b, n, q) and exclude feature maps, as the reference asserts.
 */
export function checkRVQOptions(opts: RVQApplyOptions, x: Tensor, nq: number, imageFmap: boolean, where: string): CheckedRVQCall {
  checkOptionNames(opts, RVQ_OPTION_NAMES, where)
  const fail = (kind: 'input' | 'shape' | 'dtype', arg: string, msg: string): never => {
    throw new TesseraError(kind, `${where}.${arg}`, msg)
  }
  checkResidualCallOptions(opts, where)
  for (const k of ['freezeCodebook', 'inputRequiresGrad'] as const)
    if (opts[k] !== undefined && typeof opts[k] !== 'boolean') fail('input', k, `must be a boolean, got ${typeof opts[k]}`)
  if (opts.sampleCodebookTemp !== undefined && (typeof opts.sampleCodebookTemp !== 'number' || !Number.isFinite(opts.sampleCodebookTemp)))
    fail('input', 'sampleCodebookTemp', `must be a finite number, got ${String(opts.sampleCodebookTemp)}`)
  let mask: Tensor | undefined
  if (opts.mask !== undefined) {
    const m = opts.mask
    if (!isTensor(m)) fail('input', 'mask', 'must be a bool tensor (b, n)')
    if (imageFmap || x.rank !== 3) fail('shape', 'mask', `needs a (b, n, dim) input (the reference's layers refuse a mask for feature maps and single tokens), got x ${show(x)}`)
    if (m.dtype !== 'bool') fail('dtype', 'mask', `must be bool, got ${show(m)}`)
    if (m.rank !== 2 || m.shape[0] !== x.shape[0] || m.shape[1] !== x.shape[1]) fail('shape', 'mask', `must be (${x.shape[0]}, ${x.shape[1]}) for x ${fmtShape(x.shape)}, got ${show(m)}`)
    mask = m
  }
  let targets: Tensor | undefined
  if (opts.indices !== undefined) {
    const t = opts.indices
    if (!isTensor(t)) fail('input', 'indices', `must be an int32 tensor (b, n, ${nq}) of target codes`)
    if (imageFmap) fail('input', 'indices', 'target codes are not taken with accept_image_fmap (the reference asserts)')
    if (t.dtype !== 'int32') fail('dtype', 'indices', `must be int32, got ${show(t)}`)
    if (x.rank !== 3 || t.rank !== 3 || t.shape[0] !== x.shape[0] || t.shape[1] !== x.shape[1] || t.shape[2] !== nq)
      fail('shape', 'indices', `target codes must be (${x.shape[0]}, ${x.rank === 3 ? x.shape[1] : 'n'}, ${nq}) for x ${fmtShape(x.shape)}, got ${show(t)}`)
    targets = t
  }
  return { ...(mask ? { mask } : {}), ...(targets ? { targets } : {}) }
}

/** Checks a GroupedResidualVQ call's option names (its targets' shape: groupedTargetApply). */
export function checkGroupedRVQOptions(opts: GroupedRVQApplyOptions, where: string): void {
  checkOptionNames(opts, GROUPED_RVQ_OPTION_NAMES, where)
}
