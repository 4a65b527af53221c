import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, it } from 'vitest'
import type { HostTensor } from '@tessera/core'
import { TesseraError, random, tensorOf } from '@tessera/core'
import { garbageLike } from '@tessera/core/testing'
import { adam } from '@tessera/nn'
import { cpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import { decodeCheckpoint, encodeCheckpoint } from '../src/vqvae/checkpoint.js'
import { chooseQuantizer, quantizerNames } from '../src/vqvae/choices.js'
import { makeVqVae } from '../src/vqvae/model.js'
import { buildTrainStep } from '../src/vqvae/step.js'
import { codeStats } from '../src/vqvae/metrics.js'
import type { MnistSplit } from '../src/vqvae/mnist.js'
import { IMAGE_SIZE, loadMnist, meanImageBaseline } from '../src/vqvae/mnist.js'
import { evaluate, trainVqVae } from '../src/vqvae/train.js'

const data = loadMnist()
const small = { backend: cpuBackend(), batch: 16, lr: 3e-3, seed: 3, tokens: 4, hidden: 32, testImages: 40 }

describe('MNIST from the mnist package', () => {
  it('splits 9000 / 1000 digits in [0, 1], and the mean-image baseline is what MNIST gives', () => {
    expect(data.train.count).toBe(9000)
    expect(data.test.count).toBe(1000)
    expect(data.test.images.every((v) => v >= 0 && v <= 1)).toBe(true)
    expect(meanImageBaseline(data.train, data.test)).toBeCloseTo(0.067, 2)
  })
})

describe('a short training run', () => {
  it('lowers the loss, and its checkpoint reloads to identical outputs', async () => {
    const r = await trainVqVae({ ...small, quantizer: 'fsq', steps: 40 }, data)
    const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
    expect(mean(r.losses.slice(-5))).toBeLessThan(0.8 * mean(r.losses.slice(0, 5)))
    expect(r.losses.every(Number.isFinite)).toBe(true)
    expect(r.metrics.testMse).toBeLessThan(r.metrics.baselineMse * 1.5)
    expect(r.metrics.codebookUsage).toBeGreaterThan(0)

    const bytes = encodeCheckpoint(r.params, r.state, { quantizer: 'fsq', tokens: small.tokens, hidden: small.hidden })
    const loaded = decodeCheckpoint(bytes, r.model)
    if (E.isLeft(loaded)) throw loaded.left
    const a = await evaluate(r.model, r.params, r.state, data, small.backend, 40)
    const b = await evaluate(r.model, loaded.right.params, loaded.right.state, data, small.backend, 40)
    expect(Array.from(b.recon)).toEqual(Array.from(a.recon))
    expect(b.indices.map((t) => Array.from(t.data))).toEqual(a.indices.map((t) => Array.from(t.data)))
    expect(a.testMse).toBeCloseTo(r.metrics.testMse, 6)
  })

  it('a checkpoint for another model is refused with the tensor named', async () => {
    const r = await trainVqVae({ ...small, quantizer: 'fsq', steps: 1 }, data)
    const other = await trainVqVae({ ...small, quantizer: 'fsq', steps: 1, hidden: 16 }, data)
    const loaded = decodeCheckpoint(encodeCheckpoint(r.params, r.state, { quantizer: 'fsq', tokens: 4, hidden: 32 }), other.model)
    expect(E.isLeft(loaded) && loaded.left.message).toMatch(/params\.encoder\.0\.weight is float32\[32,784\]; the model needs float32\[16,784\]/)
  })

  it('stops a divergent run with a message naming the step', async () => {
    const images = data.train.images.slice(0, 64 * IMAGE_SIZE)
    images[3 * IMAGE_SIZE + 100] = Number.NaN
    const poisoned: MnistSplit = { train: { images, labels: data.train.labels.slice(0, 64), count: 64 }, test: data.test }
    // 64 images, batch 16: the NaN image is in one of the first four batches, so the run stops by step 4
    const run = trainVqVae({ ...small, quantizer: 'fsq', steps: 10 }, poisoned)
    await expect(run).rejects.toBeInstanceOf(TesseraError)
    // the step's fused finite check names the poisoned pixel: column 100 of some row of the batch
    await expect(run).rejects.toThrow(/training step [1-4]: the batch is not finite at position \[\d+,100\] \(flat \d+\): NaN at step [1-4] of 10 \(loss NaN\); the run diverged/)
  })
})

describe('a training step written into given arrays (the executable option into)', () => {
  it.each([['fast, WebAssembly, 2 threads', () => fastBackend({ threads: 2 })], ['reference', () => cpuBackend()]] as const)(
    '%s: steps alternating two NaN-filled sets give the bits of steps with fresh arrays, in those very arrays',
    async (_, make) => {
      const ch = chooseQuantizer('fsq')
      if (E.isLeft(ch)) throw new Error(String(ch.left))
      const model = makeVqVae(ch.right, { tokens: small.tokens, hidden: small.hidden, output: 'linear' })
      const opt = adam({ lr: 1e-3 })
      if (E.isLeft(opt)) throw opt.left
      const backend = make()
      const step = buildTrainStep(model, opt.right, 16, backend)
      const init = model.init(random.keyFromSeed(1))
      const x = tensorOf(data.train.images.subarray(0, 16 * IMAGE_SIZE), [16, IMAGE_SIZE])
      const key = tensorOf([1, 2], [2], 'int32'), lr = tensorOf([1e-3], [])
      const nanLike = (r: Record<string, HostTensor>) => Object.fromEntries(Object.entries(r).map(([k, t]) => [k, garbageLike(t)]))
      let fresh = { params: init.params, opt: opt.right.init(init.params), state: init.state }
      let given = fresh
      const sets = [0, 1].map(() => ({ params: nanLike(fresh.params), opt: nanLike(fresh.opt), state: nanLike(fresh.state) }))
      const bits = (r: Record<string, HostTensor>) => Object.fromEntries(Object.entries(r).map(([k, t]) => [k, Array.from(new Int32Array(t.data.buffer, t.data.byteOffset, t.data.length))]))
      for (let s = 0; s < 3; s++) {
        const a = await step.run(fresh.params, fresh.opt, fresh.state, x, key, lr)
        const b = await step.run(given.params, given.opt, given.state, x, key, lr, sets[s % 2])
        expect(Object.is(b.loss, a.loss)).toBe(true)
        for (const part of ['params', 'opt', 'state'] as const) {
          expect(bits(b[part])).toEqual(bits(a[part]))
          for (const [k, t] of Object.entries(b[part])) expect(t.data).toBe(sets[s % 2]![part][k]!.data)
        }
        fresh = { params: a.params, opt: a.opt, state: a.state }
        given = { params: b.params, opt: b.opt, state: b.state }
      }
      step.dispose()
      await backend.dispose?.()
    },
  )
})

describe('every quantizer choice trains through the Quantizer contract', () => {
  it.each(quantizerNames)('%s: two steps give finite losses, and gradients reach the encoder through the quantizer', async (name) => {
    const r = await trainVqVae({ ...small, quantizer: name, steps: 2, testImages: 20 }, data)
    expect(r.losses.every(Number.isFinite)).toBe(true)
    // Adam moves a weight only where its gradient was nonzero: a quantizer without a
    // straight-through path would leave the encoder exactly at its initial values
    const init = r.model.init(random.splitKey(random.keyFromSeed(small.seed), 3)[0]!).params
    const moved = r.params['encoder.0.weight']!.data.filter((v, i) => v !== init['encoder.0.weight']!.data[i]).length
    expect(moved).toBeGreaterThan(0)
    expect(Number.isFinite(r.metrics.testMse)).toBe(true)
    expect(r.metrics.perplexity).toBeGreaterThanOrEqual(1)
  })
})

describe('gradients agree across backends', () => {
  it('the same training steps on the reference interpreter and the fused JS backend give the same losses and weights', async () => {
    const opts = { ...small, quantizer: 'vq', steps: 3, testImages: 20 }
    const a = await trainVqVae(opts, data)
    const fast = fastBackend({ wasm: false })
    const b = await trainVqVae({ ...opts, backend: fast }, data)
    const tol = (want: number) => fast.caps.atol + fast.caps.rtol * Math.abs(want)
    a.losses.forEach((l, i) => expect(Math.abs(b.losses[i]! - l)).toBeLessThanOrEqual(tol(l)))
    for (const [k, t] of Object.entries(a.params)) {
      const u = b.params[k]!.data
      t.data.forEach((v, i) => {
        if (Math.abs(u[i]! - v) > 10 * tol(v)) throw new Error(`${k}[${i}]: reference ${v}, fast ${u[i]}`)
      })
    }
  })
})

describe('the demo on gpu.js', () => {
  it('one training step on gpujs-cpu matches the reference interpreter within the backend caps', async () => {
    expect(await gpuJsUnavailable('cpu')).toBeUndefined()
    const opts = { ...small, quantizer: 'vq', steps: 1, testImages: 20 }
    const a = await trainVqVae(opts, data)
    const gj = gpuJsBackend('cpu')
    try {
      const b = await trainVqVae({ ...opts, backend: gj }, data)
      const tol = (want: number) => gj.caps.atol + gj.caps.rtol * Math.abs(want)
      expect(b.losses).toHaveLength(1)
      expect(Math.abs(b.losses[0]! - a.losses[0]!)).toBeLessThanOrEqual(tol(a.losses[0]!))
      for (const [k, t] of Object.entries(a.params)) {
        const u = b.params[k]!.data
        t.data.forEach((v, i) => {
          if (Math.abs(u[i]! - v) > 10 * tol(v)) throw new Error(`${k}[${i}]: reference ${v}, gpujs-cpu ${u[i]}`)
        })
      }
    } finally {
      gj.dispose()
    }
  })
})

describe('codebook statistics', () => {
  it('usage and perplexity of hand-made indices', () => {
    const idx = { shape: [8], dtype: 'int32' as const, data: Int32Array.from([0, 1, 0, 1, 0, 1, 0, 1]) }
    // 2 codebooks interleaved: codebook 0 sees only code 0, codebook 1 only code 1
    const s = codeStats([idx], 2, 4)
    expect(s.usage).toBe(2 / 8)
    expect(s.perplexity).toBe(1)
    const uniform = codeStats([{ shape: [4], dtype: 'int32', data: Int32Array.from([0, 1, 2, 3]) }], 1, 4)
    expect(uniform.usage).toBe(1)
    expect(uniform.perplexity).toBeCloseTo(4, 12)
  })
})
