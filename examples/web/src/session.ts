/**
 * Training and evaluation for the page, built from the demo's own pieces (quantizer recipes,
 * model, compiled training step, evaluation, checkpoint format), so a page run and `pnpm demo`
 * train the same model the same way: same init, shuffles, per-step keys and learning-rate
 * schedule for a given seed. Only the loop is the page's, because it must hand the browser back
 * its thread between steps (to paint the plots) and stop when asked.
 */
import type { Backend, HostTensor } from '@tessera/core'
import { TesseraError, isLeft, random, tensorOf } from '@tessera/core'
import { adam } from '@tessera/nn'
import { decodeCheckpoint, encodeCheckpoint, readCheckpointMeta } from '../../demo/src/vqvae/checkpoint.js'
import { chooseQuantizer } from '../../demo/src/vqvae/choices.js'
import type { QuantizerChoice } from '../../demo/src/vqvae/choices.js'
import { IMAGE_SIZE, gatherRows, meanImageBaseline } from '../../demo/src/vqvae/digits.js'
import type { Digits, MnistSplit } from '../../demo/src/vqvae/digits.js'
import { codeCounts, codeStats } from '../../demo/src/vqvae/metrics.js'
import { makeVqVae } from '../../demo/src/vqvae/model.js'
import type { VqVae } from '../../demo/src/vqvae/model.js'
import { buildEval, buildTrainStep } from '../../demo/src/vqvae/step.js'
import { batchSchedule, evaluate, learningRateAt } from '../../demo/src/vqvae/train.js'

export interface TrainSettings {
  readonly quantizer: string
  readonly steps: number
  readonly batch: number
  readonly lr: number
  readonly hidden: number
  readonly seed: number
}

/** A model and its weights: trained here or loaded from a checkpoint. */
export interface Trained {
  readonly model: VqVae
  readonly params: Record<string, HostTensor>
  readonly state: Record<string, HostTensor>
}

export interface Progress {
  readonly step: number
  readonly loss: number
  readonly mse: number
  /** Fraction of codes used over the last 20 batches (as the demo's progress bar shows). */
  readonly usage: number
  /** Code counts over those batches, one array per codebook. */
  readonly counts: readonly Float64Array[]
}

export interface TrainHooks {
  /** Called after every step; the loop awaits it, which is where the page yields to paint. */
  onStep(p: Progress): void | Promise<void>
  /** Reconstructions of the preview images, every `previewEvery` steps and after the last. */
  onPreview(recons: Float32Array): void | Promise<void>
  readonly previewEvery: number
  /** Test-set rows shown in the preview grid. */
  readonly previewRows: readonly number[]
  /** True once the user pressed Stop: the loop ends after the current step and keeps its weights. */
  stopRequested(): boolean
}

export function choose(name: string): QuantizerChoice {
  const ch = chooseQuantizer(name)
  if (isLeft(ch)) throw typeof ch.left === 'string' ? new TesseraError('config', 'quantizer', ch.left) : ch.left
  return ch.right
}

/** Trains the demo's VQ-VAE on `backend`; returns the weights of the last step completed. */
export async function train(settings: TrainSettings, data: MnistSplit, backend: Backend, hooks: TrainHooks): Promise<Trained & { losses: number[] }> {
  const choice = choose(settings.quantizer)
  // the demo's defaults: its recipe's token count and a linear decoder output
  const model = makeVqVae(choice, { tokens: choice.tokens, hidden: settings.hidden, output: 'linear' })
  const opt = adam({ lr: settings.lr })
  if (isLeft(opt)) throw opt.left
  const [initKey, shuffleKey, stepKey] = random.splitKey(random.keyFromSeed(settings.seed), 3) as [random.Key, random.Key, random.Key]
  const init = model.init(initKey)
  let params = init.params
  let state = init.state
  let optState = opt.right.init(params)
  const previewX = tensorOf(gatherRows(data.test, hooks.previewRows), [hooks.previewRows.length, IMAGE_SIZE])
  const step = buildTrainStep(model, opt.right, settings.batch, backend)
  const preview = buildEval(model, hooks.previewRows.length, backend)
  const losses: number[] = []
  const recent: HostTensor[] = []
  try {
    // the demo's schedule (train.ts): a fresh permutation per epoch, one key per step
    const next = batchSchedule(shuffleKey, stepKey, data.train.count, settings.batch)
    for (let s = 0; s < settings.steps && !hooks.stopRequested(); s++) {
      const { rows, key } = next(s)
      const x = tensorOf(gatherRows(data.train, rows), [settings.batch, IMAGE_SIZE])
      const r = await step.run(params, optState, state, x, key, tensorOf([learningRateAt(settings.lr, s, settings.steps)], []))
      if (r.nonFinite !== undefined || !Number.isFinite(r.mse))
        throw new TesseraError('numeric', `training step ${s + 1}`, `${r.nonFinite ?? `the reconstruction error became ${r.mse}`} at step ${s + 1}; the run diverged and was stopped (try a smaller learning rate)`)
      params = r.params
      optState = r.opt
      state = r.state
      losses.push(r.loss)
      recent.push(r.indices)
      if (recent.length > 20) recent.shift()
      const stats = codeStats(recent, choice.codebooks, choice.codebookSize)
      await hooks.onStep({ step: s + 1, loss: r.loss, mse: r.mse, usage: stats.usage, counts: stats.counts })
      if ((s + 1) % hooks.previewEvery === 0) await hooks.onPreview((await preview.run(params, state, previewX)).recon.data as Float32Array)
    }
    if (losses.length % hooks.previewEvery !== 0) await hooks.onPreview((await preview.run(params, state, previewX)).recon.data as Float32Array)
  } finally {
    step.dispose()
    preview.dispose()
  }
  return { model, params, state, losses }
}

/** `count` rows spread evenly over `n` (the test set is ordered by digit, so every digit shows). */
export const spreadRows = (n: number, count: number): number[] => Array.from({ length: count }, (_, i) => Math.floor((i * n) / count))

/** The rows `rows` of a digit set, as a set of their own. */
const subset = (set: Digits, rows: readonly number[]): Digits => ({
  images: gatherRows(set, rows),
  labels: Int32Array.from(rows, (r) => set.labels[r]!),
  count: rows.length,
})

export interface Evaluation {
  /** The test digits evaluated (n x 784) and their reconstructions. */
  readonly images: Float32Array
  readonly recon: Float32Array
  readonly testImages: number
  readonly testMse: number
  /** The mean training image's error on the same digits. */
  readonly baselineMse: number
  readonly counts: readonly Float64Array[]
  readonly usage: number
  readonly perplexity: number
}

/**
 * The demo's evaluation (eval mode) with its code statistics, on `testImages` test digits spread
 * over the whole test set (all of it at 1000, as the demo evaluates).
 */
export async function evaluateModel(t: Trained, data: MnistSplit, backend: Backend, testImages: number): Promise<Evaluation> {
  const n = Math.min(testImages, data.test.count)
  const test = subset(data.test, spreadRows(data.test.count, n))
  const ev = await evaluate(t.model, t.params, t.state, { train: data.train, test }, backend, n)
  const { codebooks, codebookSize } = t.model.choice
  const stats = codeStats(ev.indices, codebooks, codebookSize)
  return {
    images: test.images,
    recon: ev.recon,
    testImages: n,
    testMse: ev.testMse,
    baselineMse: meanImageBaseline(data.train, test),
    counts: codeCounts(ev.indices, codebooks, codebookSize),
    usage: stats.usage,
    perplexity: stats.perplexity,
  }
}

/** The demo's checkpoint file (the one `pnpm demo` writes) for a trained model. */
export function saveCheckpoint(t: Trained): Uint8Array {
  return encodeCheckpoint(t.params, t.state, { quantizer: t.model.choice.name, tokens: t.model.shape.tokens, hidden: t.model.shape.hidden })
}

/** Rebuilds the model a checkpoint names (quantizer, tokens, hidden width) and loads its weights, checking every tensor. */
export function loadCheckpoint(bytes: Uint8Array): Trained {
  const meta = readCheckpointMeta(bytes)
  if (isLeft(meta)) throw meta.left
  const { quantizer, tokens, hidden } = meta.right
  if (!(Number.isInteger(tokens) && tokens > 0 && Number.isInteger(hidden) && hidden > 0))
    throw new TesseraError('input', 'checkpoint', `the checkpoint's tokens (${tokens}) and hidden width (${hidden}) must be positive integers`)
  const model = makeVqVae(choose(quantizer), { tokens, hidden, output: 'linear' })
  const loaded = decodeCheckpoint(bytes, model)
  if (isLeft(loaded)) throw loaded.left
  return { model, ...loaded.right }
}
