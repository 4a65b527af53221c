/**
 * The page: picks a quantizer and backend, trains the demo's VQ-VAE with live plots, evaluates,
 * and saves or loads checkpoints. Its state lives in this module's `page` closure; the outcome
 * of each action is also written to `document.body.dataset` (state, losses, test error), which
 * is what the browser test (test/web.test.ts) reads.
 */
import type { Backend } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import { IMAGE_SIZE, splitDigits } from '../../demo/src/vqvae/digits.js'
import type { MnistSplit } from '../../demo/src/vqvae/digits.js'
import { quantizerNames } from '../../demo/src/vqvae/choices.js'
import { decodeDigits } from './asset.js'
import { drawHistogram, drawPairGrid, drawSeries } from './draw.js'
import type { Evaluation, Trained } from './session.js'
import { choose, evaluateModel, loadCheckpoint, saveCheckpoint, spreadRows, train } from './session.js'

interface BackendChoice {
  readonly label: string
  readonly note: string
  readonly unavailable?: () => Promise<string | undefined>
  readonly make: () => Backend
}

/** The backends a page can run, by the select's value; each is made fresh for one action and disposed after. */
const backends: Readonly<Record<string, BackendChoice>> = {
  fast: {
    label: 'fast (fused JS + WebAssembly)',
    note: 'The fast backend runs on one thread in a browser today (it uses worker threads only in Node).',
    make: () => fastBackend(),
  },
  'gpujs-webgl2': {
    label: 'gpu.js webgl2',
    note: 'gpu.js compiles each kernel to a WebGL2 shader the first time it runs, so the first step takes a while.',
    unavailable: () => gpuJsUnavailable('webgl2'),
    make: () => gpuJsBackend('webgl2'),
  },
  'gpujs-webgpu': {
    label: 'gpu.js webgpu',
    note: 'Needs a browser with WebGPU (Chrome; headless Chromium needs --enable-unsafe-webgpu).',
    unavailable: () => gpuJsUnavailable('webgpu'),
    make: () => gpuJsBackend('webgpu'),
  },
  cpu: {
    label: 'cpu (the reference interpreter)',
    note: 'The reference interpreter: exact and slow, for checking the others.',
    make: cpuBackend,
  },
}

const el = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id)
  if (!e) throw new Error(`the page has no #${id}`)
  return e as T
}
const ui = {
  quantizer: el<HTMLSelectElement>('quantizer'),
  backend: el<HTMLSelectElement>('backend'),
  backendNote: el('backend-note'),
  steps: el<HTMLInputElement>('steps'),
  batch: el<HTMLInputElement>('batch'),
  hidden: el<HTMLInputElement>('hidden'),
  lr: el<HTMLInputElement>('lr'),
  seed: el<HTMLInputElement>('seed'),
  testImages: el<HTMLInputElement>('test-images'),
  train: el<HTMLButtonElement>('train'),
  stop: el<HTMLButtonElement>('stop'),
  evaluate: el<HTMLButtonElement>('evaluate'),
  save: el<HTMLButtonElement>('save'),
  load: el<HTMLInputElement>('load'),
  status: el('status'),
  summary: el('summary'),
  loss: el<HTMLCanvasElement>('loss'),
  usage: el<HTMLCanvasElement>('usage'),
  grid: el<HTMLCanvasElement>('grid'),
  histogram: el<HTMLCanvasElement>('histogram'),
}

for (const name of quantizerNames) ui.quantizer.add(new Option(`${name}: ${choose(name).describe}`, name))
for (const [value, b] of Object.entries(backends)) ui.backend.add(new Option(b.label, value))
const showNote = () => (ui.backendNote.textContent = backends[ui.backend.value]!.note)
ui.backend.addEventListener('change', showNote)
showNote()

/** Lets the browser paint (and handle Stop) between steps. */
const yieldToPage = () => new Promise<void>((resolve) => setTimeout(resolve, 0))

const setState = (state: string, status: string, error = false) => {
  document.body.dataset['state'] = state
  ui.status.textContent = status
  ui.status.classList.toggle('error', error)
}

const positiveInt = (input: HTMLInputElement, name: string, max = Infinity): number => {
  const n = Number(input.value)
  if (!Number.isInteger(n) || n < 1 || n > max) throw new Error(`${name} must be a whole number from 1 to ${max}, got ${input.value}`)
  return n
}

const gather = (src: Float32Array, rows: readonly number[]) => {
  const out = new Float32Array(rows.length * IMAGE_SIZE)
  rows.forEach((r, i) => out.set(src.subarray(r * IMAGE_SIZE, (r + 1) * IMAGE_SIZE), i * IMAGE_SIZE))
  return out
}

async function main(): Promise<void> {
  const response = await fetch('./mnist-digits.bin')
  if (!response.ok) throw new Error(`could not load mnist-digits.bin (${response.status})`)
  const data: MnistSplit = splitDigits(decodeDigits(new Uint8Array(await response.arrayBuffer())))
  let current: Trained | undefined
  let stopRequested = false
  let busy = false

  const controls = (running: boolean) => {
    busy = running
    ui.train.disabled = ui.evaluate.disabled = ui.save.disabled = ui.load.disabled = running
    ui.evaluate.disabled ||= !current
    ui.save.disabled ||= !current
    ui.stop.disabled = !running
  }

  /** Runs `action` on a fresh backend of the selected kind, disposing it afterwards. */
  const withBackend = async <T>(action: (backend: Backend) => Promise<T>): Promise<T> => {
    const choice = backends[ui.backend.value]!
    const why = choice.unavailable ? await choice.unavailable() : undefined
    if (why !== undefined) throw new Error(`${choice.label} is not available in this browser: ${why}`)
    const backend = choice.make()
    try {
      return await action(backend)
    } finally {
      await backend.dispose?.()
    }
  }

  const showEvaluation = (t: Trained, ev: Evaluation, what: string) => {
    const rows = spreadRows(ev.testImages, Math.min(32, ev.testImages))
    drawPairGrid(ui.grid, gather(ev.images, rows), gather(ev.recon, rows), rows.length, 16)
    const { codebooks, codebookSize } = t.model.choice
    drawHistogram(ui.histogram, ev.counts, `codes used on ${ev.testImages} test digits: ${(100 * ev.usage).toFixed(1)}% of ${codebooks} x ${codebookSize}, perplexity ${ev.perplexity.toFixed(1)}`)
    ui.summary.textContent =
      `${what}: test reconstruction MSE ${ev.testMse.toFixed(5)} on ${ev.testImages} test digits ` +
      `(mean-image baseline ${ev.baselineMse.toFixed(5)}, ${(ev.baselineMse / ev.testMse).toFixed(2)}x better); ` +
      `model: ${t.model.shape.tokens} tokens per image, ${t.model.choice.describe}, hidden width ${t.model.shape.hidden}`
    document.body.dataset['testMse'] = String(ev.testMse)
  }

  const run = (label: string, action: () => Promise<void>) => async () => {
    if (busy) return
    controls(true)
    try {
      await action()
    } catch (e) {
      console.error(e)
      setState('error', `${label} failed: ${e instanceof Error ? e.message : String(e)}`, true)
    } finally {
      controls(false)
    }
  }

  ui.train.addEventListener(
    'click',
    run('training', async () => {
      const settings = {
        quantizer: ui.quantizer.value,
        steps: positiveInt(ui.steps, 'steps'),
        batch: positiveInt(ui.batch, 'batch', data.train.count),
        lr: Number(ui.lr.value),
        hidden: positiveInt(ui.hidden, 'hidden width'),
        seed: positiveInt(ui.seed, 'seed'),
      }
      const testImages = positiveInt(ui.testImages, 'test images', data.test.count)
      if (!(settings.lr > 0)) throw new Error(`the learning rate must be positive, got ${ui.lr.value}`)
      stopRequested = false
      const losses: number[] = []
      const usages: number[] = []
      const previewRows = spreadRows(data.test.count, 32)
      const previewOriginals = gather(data.test.images, previewRows)
      const plot = () => {
        drawSeries(ui.loss, losses, { title: 'training loss', color: '#2f6fdf', log: true, format: (v) => v.toPrecision(3), steps: settings.steps })
        drawSeries(ui.usage, usages, { title: 'codes used (last 20 batches)', color: '#2a9d6f', range: [0, 1], format: (v) => `${(100 * v).toFixed(1)}%`, steps: settings.steps })
      }
      plot()
      setState('training', `compiling the training step for ${ui.backend.value}…`)
      await yieldToPage()
      let lastPaint = 0
      const t0 = performance.now()
      // one backend for training and evaluation: gpu.js keeps the kernels it compiled, so an
      // evaluation batch the size of the preview's reuses the preview's kernels
      const { trained, ev, seconds } = await withBackend(async (backend) => {
        const trained = await train(settings, data, backend, {
          previewEvery: 25,
          previewRows,
          stopRequested: () => stopRequested,
          onStep: async (p) => {
            losses.push(p.loss)
            usages.push(p.usage)
            const now = performance.now()
            if (now - lastPaint > 100 || p.step === settings.steps) {
              lastPaint = now
              plot()
              drawHistogram(ui.histogram, p.counts, `codes used in the last 20 batches: ${(100 * p.usage).toFixed(1)}%`)
              const rate = p.step / ((now - t0) / 1000)
              setState('training', `step ${p.step} / ${settings.steps}: loss ${p.loss.toFixed(4)}, reconstruction ${p.mse.toFixed(4)} (${rate.toFixed(1)} steps/s)`)
              await yieldToPage()
            }
          },
          onPreview: async (recons) => {
            drawPairGrid(ui.grid, previewOriginals, recons, previewRows.length, 16)
            await yieldToPage()
          },
        })
        current = trained
        const seconds = (performance.now() - t0) / 1000
        const mean3 = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
        Object.assign(document.body.dataset, {
          steps: String(trained.losses.length),
          backend: ui.backend.value,
          firstLoss: String(mean3(trained.losses.slice(0, 3))),
          lastLoss: String(mean3(trained.losses.slice(-3))),
        })
        plot()
        setState('evaluating', `trained ${trained.losses.length} steps in ${seconds.toFixed(1)} s; evaluating ${testImages} test digits…`)
        await yieldToPage()
        return { trained, ev: await evaluateModel(trained, data, backend, testImages), seconds }
      })
      showEvaluation(trained, ev, `after ${trained.losses.length} steps on ${ui.backend.value}`)
      setState('done', `trained ${trained.losses.length} steps on ${ui.backend.value} in ${seconds.toFixed(1)} s (${(trained.losses.length / seconds).toFixed(1)} steps/s)`)
    }),
  )

  ui.stop.addEventListener('click', () => {
    stopRequested = true
    ui.status.textContent = 'stopping after this step…'
  })

  const evaluateCurrent = async (what: string) => {
    const t = current
    if (!t) return
    const testImages = positiveInt(ui.testImages, 'test images', data.test.count)
    setState('evaluating', `reconstructing ${testImages} test digits on ${ui.backend.value}…`)
    await yieldToPage()
    const ev = await withBackend((backend) => evaluateModel(t, data, backend, testImages))
    showEvaluation(t, ev, what)
    setState('done', `${what}: reconstructed ${testImages} test digits on ${ui.backend.value}`)
  }
  ui.evaluate.addEventListener('click', run('reconstruction', () => evaluateCurrent('current model')))

  ui.save.addEventListener('click', () => {
    if (!current) return
    // encodeSafetensors allocates a plain ArrayBuffer; the cast only tells Blob's typing so
    const url = URL.createObjectURL(new Blob([saveCheckpoint(current) as Uint8Array<ArrayBuffer>], { type: 'application/octet-stream' }))
    const a = document.createElement('a')
    a.href = url
    a.download = `vqvae-${current.model.choice.name}.safetensors`
    a.click()
    setTimeout(() => URL.revokeObjectURL(url), 10_000)
  })

  ui.load.addEventListener(
    'change',
    run('loading the checkpoint', async () => {
      const file = ui.load.files?.[0]
      if (!file) return
      current = loadCheckpoint(new Uint8Array(await file.arrayBuffer()))
      ui.quantizer.value = current.model.choice.name
      ui.hidden.value = String(current.model.shape.hidden)
      ui.load.value = ''
      await evaluateCurrent(`checkpoint ${file.name}`)
    }),
  )

  controls(false)
  setState('ready', `${data.train.count} training and ${data.test.count} test digits loaded; pick a quantizer and a backend, then Train`)
}

main().catch((e: unknown) => {
  console.error(e)
  setState('error', `the page could not start: ${e instanceof Error ? e.message : String(e)}`, true)
})
