import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { TesseraError, random, tensorOf, zerosHost } from '@tessera/core'
import { adam } from '@tessera/nn'
import type { QuantizerChoice } from './choices.js'
import { chooseQuantizer } from './choices.js'
import { codeStats, mse } from './metrics.js'
import type { MnistSplit } from './digits.js'
import { IMAGE_SIZE, gatherRows, meanImageBaseline } from './digits.js'
import type { VqVae } from './model.js'
import { makeVqVae } from './model.js'
import { buildEval, buildTrainStep } from './step.js'

export interface TrainOptions {
  readonly quantizer: string
  readonly backend: Backend
  readonly steps: number
  readonly batch: number
  readonly lr: number
  readonly seed: number
  /** Latent tokens per image (default: the quantizer choice's). */
  readonly tokens?: number
  readonly hidden: number
  readonly output?: 'linear' | 'sigmoid'
  /** Test images evaluated (all by default). */
  readonly testImages?: number
  /** A quantizer choice built by the caller (probes of other recipes); `quantizer` then only names it. */
  readonly choice?: QuantizerChoice
}

export interface StepInfo {
  readonly step: number
  readonly loss: number
  readonly mse: number
  /** Fraction of codes used over the last few batches. */
  readonly usage: number
}

export interface Metrics {
  readonly quantizer: string
  readonly backend: string
  readonly steps: number
  readonly batch: number
  readonly tokens: number
  readonly hidden: number
  readonly testImages: number
  readonly testMse: number
  readonly baselineMse: number
  readonly baselineRatio: number
  readonly codebookUsage: number
  readonly perplexity: number
  readonly codebookSize: number
  readonly codebooks: number
  readonly firstLoss: number
  readonly lastLoss: number
  readonly trainSeconds: number
  readonly evalSeconds: number
}

export interface TrainResult {
  readonly model: VqVae
  readonly choice: QuantizerChoice
  readonly params: Record<string, HostTensor>
  readonly state: Record<string, HostTensor>
  readonly metrics: Metrics
  readonly losses: readonly number[]
  /** The first test images and their reconstructions (for the PNG grid). */
  readonly sample: { readonly originals: Float32Array; readonly recons: Float32Array; readonly count: number }
}

/**
 * The learning rate at step s (0-based): a short linear warmup, then a cosine decay to 5% of
 * the base rate, which settles the weights (and the codebook) for the final evaluation.
 */
export function learningRateAt(base: number, s: number, steps: number): number {
  const warm = Math.max(1, Math.min(50, Math.floor(steps / 10)))
  const warmup = Math.min(1, (s + 1) / warm)
  const cosine = 0.05 + 0.95 * 0.5 * (1 + Math.cos((Math.PI * s) / steps))
  return base * warmup * cosine
}

/** A permutation of 0..n-1 drawn from a key (sorting uniform draws); the web page shuffles with it too. */
export function permutation(key: random.Key, n: number): Int32Array {
  const u = random.uniformHost(key, n)
  return Int32Array.from(Array.from({ length: n }, (_, i) => i).sort((a, b) => u[a]! - u[b]! || a - b))
}

/**
 * The training schedule's inputs for step s: the batch's rows (a fresh permutation of the training
 * set each epoch, drawn from `shuffleKey`) and the step's random key (from `stepKey`). Shared by
 * the demo and the web page, so both train on the same batches.
 */
export function batchSchedule(shuffleKey: random.Key, stepKey: random.Key, count: number, batch: number) {
  let perm = permutation(shuffleKey, count)
  let epoch = 0
  let cursor = 0
  return (s: number): { readonly rows: Int32Array; readonly key: HostTensor } => {
    if (cursor + batch > count) {
      epoch++
      perm = permutation(random.splitKey(shuffleKey, epoch + 1)[epoch]!, count)
      cursor = 0
    }
    const rows = perm.subarray(cursor, cursor + batch)
    cursor += batch
    return { rows, key: tensorOf(random.splitKey(stepKey, 1)[0]!.map((v, i) => (i === 0 ? v ^ s : v)), [2], 'int32') }
  }
}

export async function evaluate(
  model: VqVae,
  params: Record<string, HostTensor>,
  state: Record<string, HostTensor>,
  data: MnistSplit,
  backend: Backend,
  testImages: number,
): Promise<{ testMse: number; recon: Float32Array; indices: HostTensor[] }> {
  const evalBatch = Math.min(200, testImages)
  const ev = buildEval(model, evalBatch, backend)
  try {
    const recon = new Float32Array(testImages * IMAGE_SIZE)
    const indices: HostTensor[] = []
    for (let start = 0; start < testImages; start += evalBatch) {
      // the last batch repeats rows from the start to fill the compiled batch size; they are dropped
      const rows = Array.from({ length: evalBatch }, (_, i) => (start + i) % testImages)
      const r = await ev.run(params, state, tensorOf(gatherRows(data.test, rows), [evalBatch, IMAGE_SIZE]))
      const keep = Math.min(evalBatch, testImages - start)
      recon.set(r.recon.data.subarray(0, keep * IMAGE_SIZE), start * IMAGE_SIZE)
      const per = r.indices.data.length / evalBatch
      indices.push(tensorOf(r.indices.data.subarray(0, keep * per), [keep * per], 'int32'))
    }
    return { testMse: mse(recon, data.test.images.subarray(0, testImages * IMAGE_SIZE)), recon, indices }
  } finally {
    ev.dispose()
  }
}

/** `count` test images spread evenly over the set (it is ordered by digit), with their reconstructions. */
function spreadSample(images: Float32Array, recon: Float32Array, n: number, count: number) {
  const originals = new Float32Array(count * IMAGE_SIZE)
  const recons = new Float32Array(count * IMAGE_SIZE)
  for (let i = 0; i < count; i++) {
    const row = Math.floor((i * n) / count)
    originals.set(images.subarray(row * IMAGE_SIZE, (row + 1) * IMAGE_SIZE), i * IMAGE_SIZE)
    recons.set(recon.subarray(row * IMAGE_SIZE, (row + 1) * IMAGE_SIZE), i * IMAGE_SIZE)
  }
  return { originals, recons, count }
}

/** Zero-filled arrays of a record's shapes and dtypes (the sets a training loop's steps write into). */
export const zerosLike = (r: Readonly<Record<string, HostTensor>>): Record<string, HostTensor> =>
  Object.fromEntries(Object.entries(r).map(([k, t]) => [k, zerosHost(t.shape, t.dtype)]))

export async function trainVqVae(opts: TrainOptions, data: MnistSplit, onStep?: (info: StepInfo) => void): Promise<TrainResult> {
  const ch = opts.choice ? E.right(opts.choice) : chooseQuantizer(opts.quantizer)
  if (E.isLeft(ch)) throw typeof ch.left === 'string' ? new TesseraError('config', 'quantizer', ch.left) : ch.left
  const choice = ch.right
  const model = makeVqVae(choice, { tokens: opts.tokens ?? choice.tokens, hidden: opts.hidden, output: opts.output ?? 'linear' })
  const opt = adam({ lr: opts.lr })
  if (E.isLeft(opt)) throw opt.left
  const rootKey = random.keyFromSeed(opts.seed)
  const [initKey, shuffleKey, stepKey] = random.splitKey(rootKey, 3) as [random.Key, random.Key, random.Key]
  const init = model.init(initKey)
  let params = init.params
  let state = init.state
  let optState = opt.right.init(params)

  const t0 = performance.now()
  const step = buildTrainStep(model, opt.right, opts.batch, opts.backend)
  const losses: number[] = []
  const recent: HostTensor[] = []
  try {
    const next = batchSchedule(shuffleKey, stepKey, data.train.count, opts.batch)
    // two sets of arrays the steps write into by turns (each step reads the other): no parameter,
    // optimizer or quantizer state array is allocated per step, and a failed step leaves the last
    // good values untouched in the set it read
    const sets = [0, 1].map(() => ({ params: zerosLike(params), opt: zerosLike(optState), state: zerosLike(state) }))
    for (let s = 0; s < opts.steps; s++) {
      const { rows, key } = next(s)
      const x = tensorOf(gatherRows(data.train, rows), [opts.batch, IMAGE_SIZE])
      const r = await step.run(params, optState, state, x, key, tensorOf([learningRateAt(opts.lr, s, opts.steps)], []), sets[s % 2])
      // the step's own finite check (the quantizers' policy, computed in the program): nothing of a
      // non-finite step is adopted, so params and state stay those of the last good step
      if (r.nonFinite !== undefined || !Number.isFinite(r.mse))
        throw new TesseraError(
          'numeric',
          `training step ${s + 1}`,
          `${r.nonFinite ?? `the reconstruction error became ${r.mse}`} at step ${s + 1} of ${opts.steps} (loss ${r.loss}); the run diverged and was stopped (try a smaller --lr)`,
        )
      params = r.params
      optState = r.opt
      state = r.state
      losses.push(r.loss)
      recent.push(r.indices)
      if (recent.length > 20) recent.shift()
      onStep?.({ step: s + 1, loss: r.loss, mse: r.mse, usage: codeStats(recent, choice.codebooks, choice.codebookSize).usage })
    }
  } finally {
    step.dispose()
  }
  const trainSeconds = (performance.now() - t0) / 1000

  const t1 = performance.now()
  const testImages = Math.min(opts.testImages ?? data.test.count, data.test.count)
  const ev = await evaluate(model, params, state, data, opts.backend, testImages)
  const stats = codeStats(ev.indices, choice.codebooks, choice.codebookSize)
  const baselineMse = meanImageBaseline(data.train, data.test)
  const count = Math.min(32, testImages)
  return {
    model,
    choice,
    params,
    state,
    losses,
    sample: spreadSample(data.test.images, ev.recon, testImages, count),
    metrics: {
      quantizer: opts.quantizer,
      backend: opts.backend.name,
      steps: opts.steps,
      batch: opts.batch,
      tokens: model.shape.tokens,
      hidden: model.shape.hidden,
      testImages,
      testMse: ev.testMse,
      baselineMse,
      baselineRatio: baselineMse / ev.testMse,
      codebookUsage: stats.usage,
      perplexity: stats.perplexity,
      codebookSize: choice.codebookSize,
      codebooks: choice.codebooks,
      firstLoss: losses[0] ?? NaN,
      lastLoss: losses[losses.length - 1] ?? NaN,
      trainSeconds,
      evalSeconds: (performance.now() - t1) / 1000,
    },
  }
}
