import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import type { HostApplyResult } from '../src/run.js'
import { applyOnHost } from '../src/run.js'
import { fsq } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import type { Cell } from './matrix-common.js'
import { tolerance } from './matrix-common.js'

/**
 * The cross-backend matrix in a browser (headless Chromium): quantizers in eval and training,
 * keyed options included, on backend-fast and gpu.js webgl2/webgpu, against the reference run in
 * the same page. Integer outputs equal; floats within 8 ops of the backend's caps.
 */

const right = <A>(e: E.Either<{ message: string }, A>): A => {
  if (E.isLeft(e)) throw new Error(e.left.message)
  return e.right
}
const randn = (shape: readonly number[], seed: number): HostTensor =>
  tensorOf(random.normalHost(random.keyFromSeed(seed), shape.reduce((a, b) => a * b, 1)), shape)

const cells: Cell[] = [
  { name: 'FSQ eval', q: right(fsq({ levels: [8, 5, 5, 5] })), x: randn([2, 8, 4], 1), training: false },
  { name: 'LFQ training', q: right(lfq({ dim: 4, codebook_size: 16 })), x: randn([2, 8, 4], 2), training: true },
  { name: 'VectorQuantize EMA training', q: right(vectorQuantize({ dim: 4, codebook_size: 16, decay: 0.8 })), x: randn([2, 8, 4], 3), training: true },
  { name: 'VectorQuantize kmeans_init (key)', q: right(vectorQuantize({ dim: 4, codebook_size: 8, kmeans_init: true, kmeans_iters: 3 })), x: randn([2, 12, 4], 4), training: true, key: [4, 1] },
  { name: 'ResidualVQ 4 layers with quantize dropout (key)', q: right(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 4, quantize_dropout: true })), x: randn([2, 6, 4], 5), training: true, key: [5, 1] },
]

const apply = async (backend: Backend, c: Cell): Promise<HostApplyResult> => {
  const init = c.q.init(random.keyFromSeed(7))
  const key = c.key ? tensorOf([...c.key], [2], 'int32') : undefined
  return right(await applyOnHost(c.q, { params: init.params, state: init.state, x: c.x, training: c.training, ...(key ? { key } : {}) }, backend))
}

const leaves = (r: HostApplyResult) =>
  new Map<string, HostTensor>([
    ['quantized', r.quantized],
    ['indices', r.indices],
    ...Object.entries(r.state).map(([k, v]) => [`state.${k}`, v] as [string, HostTensor]),
  ])

const lanes: { name: string; make: () => Promise<Backend | string> }[] = [
  { name: 'fast', make: async () => fastBackend() },
  { name: 'gpujs webgl2', make: async () => (await gpuJsUnavailable('webgl2')) ?? gpuJsBackend('webgl2') },
  { name: 'gpujs webgpu', make: async () => (await gpuJsUnavailable('webgpu')) ?? gpuJsBackend('webgpu') },
]

for (const lane of lanes)
  describe(`quantizers in the browser on ${lane.name}`, async () => {
    const made = await lane.make()
    if (typeof made === 'string') {
      console.warn(`[quantizers/matrix.browser] ${lane.name} is SKIPPED: ${made}`)
      it.skip(`${lane.name} skipped: ${made}`, () => {})
      return
    }
    for (const c of cells)
      it(c.name, async () => {
        const want = leaves(await apply(cpuBackend(), c))
        const got = leaves(await apply(made, c))
        for (const [name, w] of want) {
          const g = got.get(name)!
          if (w.dtype !== 'float32') expect(Array.from(g.data), name).toEqual(Array.from(w.data))
          else w.data.forEach((wv, i) => expect(Math.abs(g.data[i]! - wv), `${name}[${i}]`).toBeLessThanOrEqual(tolerance(made.caps, wv)))
        }
      }, 120_000)
  })
