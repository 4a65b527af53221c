import { expect, it } from 'vitest'
import { random } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import type { HostApplyResult } from '../src/run.js'
import type { Quantizer } from '../src/quantizer.js'
import { fsq } from '../src/fsq/fsq.js'
import { fsp } from '../src/fsp/fsp.js'
import { binaryMapper } from '../src/binary/binary-mapper.js'
import { lfq } from '../src/lfq/lfq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { groupedResidualFSQ } from '../src/grouped/grouped-residual.js'
import { applyQ, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { comparedLanes, zoo } from './zoo.js'
import type { Cell } from './matrix-common.js'
import { leaves, tolerance } from './matrix-common.js'

/**
 * The cross-backend matrix (issue 12): every quantizer class in eval and in training, plus every
 * option that draws from a key (k-means init, dead-code revival, stochastic sampling, quantize
 * dropout, noise dropout, entropy over a token subset), on every backend this machine has.
 * Indices (and every integer output) equal the reference's; floats stay within OPS ops' worth
 * of the backend's caps. Inputs are fixed seeds, so a near-tie would show the same way on every
 * run (none does at these sizes).
 */

function cells(): Cell[] {
  const out: Cell[] = []
  zoo.forEach((e, i) => {
    const x = randn(e.xShape, 100 + i)
    out.push({ name: `${e.name} eval`, q: e.q, x, training: false })
    out.push({ name: `${e.name} training`, q: e.q, x, training: true, key: [i, 3] })
  })
  const keyed = (name: string, q: Quantizer, shape: readonly number[], seed: number) =>
    out.push({ name: `${name} (draws from the key)`, q, x: randn(shape, seed), training: true, key: [seed, 11] })
  keyed('VectorQuantize kmeans_init', orThrow(vectorQuantize({ dim: 4, codebook_size: 8, kmeans_init: true, kmeans_iters: 3 })), [2, 12, 4], 201)
  keyed('VectorQuantize dead-code revival', orThrow(vectorQuantize({ dim: 4, codebook_size: 16, threshold_ema_dead_code: 2, decay: 0.5 })), [2, 6, 4], 202)
  keyed('VectorQuantize stochastic sampling', orThrow(vectorQuantize({ dim: 4, codebook_size: 8, stochastic_sample_codes: true, sample_codebook_temp: 0.5 })), [2, 6, 4], 203)
  keyed('ResidualVQ quantize dropout', orThrow(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 4, quantize_dropout: true })), [2, 6, 4], 204)
  keyed('FSQ noise dropout', orThrow(fsq({ levels: [5, 4, 3], preserve_symmetry: true, noise_dropout: 0.5 })), [2, 6, 3], 205)
  // wide programs: concats of 32 layers' and 16 groups' results are split to fit every mode's kernels
  out.push({ name: 'ResidualVQ 32 layers training', q: orThrow(residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 32 })), x: randn([1, 4, 4], 207), training: true, key: [207, 1] })
  out.push({ name: 'GroupedResidualFSQ 16 groups eval', q: orThrow(groupedResidualFSQ({ dim: 32, groups: 16, levels: [5, 3], num_quantizers: 2 })), x: randn([1, 3, 32], 208), training: false })
  keyed('FSP perturbation (laplace, inverse activation, quantize_rate 0.5)', orThrow(fsp({ levels: [5, 4, 3], act_name: 'laplace', need_inv_act: true, quantize_rate: 0.5, vector_norm: 'kurt' })), [2, 6, 3], 209)
  keyed('FSP normal CDF (erf, erfinv)', orThrow(fsp({ levels: [5, 4, 3], act_name: 'normal', need_inv_act: true, quantize_rate: 0.5 })), [2, 6, 3], 211)
  keyed('FSP cauchy CDF (atan, tan)', orThrow(fsp({ levels: [5, 4, 3], act_name: 'cauchy', need_inv_act: true, quantize_rate: 0.5 })), [2, 6, 3], 212)
  keyed('BinaryMapper sampled bits', orThrow(binaryMapper({ bits: 4 })), [2, 6, 4], 210)
  keyed('LFQ entropy over a token subset', orThrow(lfq({ dim: 4, codebook_size: 16, frac_per_sample_entropy: 0.5 })), [2, 6, 4], 206)
  return out
}

const lanes = comparedLanes

const reference = cpuBackend()
const all = cells()
const wanted = new Map<string, Promise<HostApplyResult>>()
const init = (c: Cell) => c.q.init(random.keyFromSeed(7))
const referenceOf = (c: Cell) => {
  if (!wanted.has(c.name)) wanted.set(c.name, applyQ(reference, c.q, init(c), c.x, { training: c.training, ...(c.key ? { key: c.key } : {}) }))
  return wanted.get(c.name)!
}

describeLanes('matrix', lanes, (lane) => `matrix: every quantizer on ${lane.name}`, (backend) => {
  for (const c of all)
    it(c.name, async () => {
      const want = leaves(await referenceOf(c))
      const got = leaves(await applyQ(backend, c.q, init(c), c.x, { training: c.training, ...(c.key ? { key: c.key } : {}) }))
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort())
      for (const [name, w] of want) {
        const g = got.get(name)!
        expect(g.shape, name).toEqual(w.shape)
        expect(g.dtype, name).toBe(w.dtype)
        if (w.dtype !== 'float32') {
          expect(Array.from(g.data), `${name} equals the reference's`).toEqual(Array.from(w.data))
          continue
        }
        w.data.forEach((wv, i) => {
          const gv = g.data[i]!
          if (Number.isNaN(wv)) expect(gv, `${name}[${i}]`).toBeNaN()
          else expect(Math.abs(gv - wv), `${name}[${i}]: ${gv} vs ${wv}`).toBeLessThanOrEqual(tolerance(backend.caps, wv))
        })
      }
    })
})
