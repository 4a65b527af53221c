import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor, Tensor } from '@tessera/core'
import { random, tensorOf, valueAndGrad } from '@tessera/core'
import { NAT, binaryMapper, decodeBinaryMapper } from '../src/binary/binary-mapper.js'
import type { Named } from '../src/quantizer.js'
import { applyOnHost } from '../src/run.js'
import { applyQ, arr, backends, decodeQ, orThrow, randn, runOnHost } from './helpers.js'

const sig = (v: number) => 1 / (1 + Math.exp(-v))
const logSig = (v: number) => Math.min(v, 0) - Math.log1p(Math.exp(-Math.abs(v)))

describe.each(backends.map((b) => [b.name, b] as const))('BinaryMapper on %s', (_name, backend) => {
  test.prop([fc.integer({ min: 1, max: 5 }), fc.constantFrom(0.5, 1, 2), fc.nat(1000)], { numRuns: 25 })(
    'deterministic: bit i is sigmoid(l_i / T) > 1/2 and weighs 2^i (bit 0 least significant); the one-hot of that index; indicesToCodes gives it back',
    async (bits, temperature, seed) => {
      const q = orThrow(binaryMapper({ bits, deterministic_on_eval: true, temperature }))
      const init = q.init(random.keyFromSeed(0))
      const x = randn([2, 3, bits], seed, 3)
      const r = await applyQ(backend, q, init, x)
      const K = 2 ** bits
      expect(r.quantized.shape).toEqual([2, 3, K])
      expect(r.indices.shape).toEqual([2, 3])
      arr(r.indices).forEach((k, t) => {
        let want = 0
        for (let i = 0; i < bits; i++) if (sig(Math.fround(x.data[t * bits + i]! / temperature)) > 0.5) want += 2 ** i
        expect(k).toBe(want)
        for (let j = 0; j < K; j++) expect(r.quantized.data[t * K + j]).toBe(j === k ? 1 : 0)
      })
      expect(arr(await decodeQ(backend, q, init, r.indices))).toEqual(arr(r.quantized))
      expect(r.loss.data[0]).toBe(0) // no aux loss in eval by default
    },
  )

  test('bit 0 is the least significant (the opposite of LFQ)', async () => {
    const q = orThrow(binaryMapper({ bits: 3, deterministic: true }))
    const r = await applyQ(backend, q, q.init(random.keyFromSeed(0)), tensorOf([5, -5, -5, -5, -5, 5], [2, 3]))
    expect(arr(r.indices)).toEqual([1, 4])
  })

  test.prop([fc.nat(1000)], { numRuns: 5 })('sampling: Bernoulli bits from the key (same key, same draw), frequencies near the probabilities; no key is a Left', async (seed) => {
    const q = orThrow(binaryMapper({ bits: 2 }))
    const init = q.init(random.keyFromSeed(0))
    const n = 4096
    const x = tensorOf(Array.from({ length: n }, () => [0.8, -1.5]).flat(), [n, 2])
    const a = await applyQ(backend, q, init, x, { key: [seed, 1] })
    const b = await applyQ(backend, q, init, x, { key: [seed, 1] })
    const c = await applyQ(backend, q, init, x, { key: [seed, 2] })
    expect(arr(a.indices)).toEqual(arr(b.indices))
    expect(arr(a.indices)).not.toEqual(arr(c.indices))
    const idx = arr(a.indices)
    const p0 = idx.filter((k) => k & 1).length / n, p1 = idx.filter((k) => k & 2).length / n
    expect(Math.abs(p0 - sig(0.8))).toBeLessThan(0.04)
    expect(Math.abs(p1 - sig(-1.5))).toBeLessThan(0.04)
    const noKey = await applyOnHost(q, { ...init, x }, backend)
    expect(E.isLeft(noKey) && noKey.left.where).toBe('BinaryMapper.deterministic')
  })

  test.prop([fc.integer({ min: 1, max: 4 }), fc.nat(1000)], { numRuns: 15 })(
    'training: the KL aux loss per token and its mean; the straight-through gradient is that of the soft code probabilities',
    async (bits, seed) => {
      const q = orThrow(binaryMapper({ bits, kl_loss_threshold: 0.1 }))
      const init = q.init(random.keyFromSeed(0))
      const x = randn([3, bits], seed, 2)
      const K = 2 ** bits
      const r = await applyQ(backend, q, init, x, { training: true, key: [seed, 3] })
      const per = arr(r.extra['aux_kl_loss']!)
      per.forEach((v, t) => {
        let h = 0
        for (let i = 0; i < bits; i++) {
          const l = x.data[t * bits + i]!
          h -= sig(l) * logSig(l) + (1 - sig(l)) * logSig(-l)
        }
        expect(v).toBeCloseTo(Math.max(bits * NAT - h - 0.1, 0), 5)
      })
      expect(r.loss.data[0]).toBeCloseTo(per.reduce((s, v) => s + v, 0) / per.length, 6)
      arr(r.quantized).forEach((v, j) => expect(Math.abs(v - (Math.floor(j / K) >= 0 && arr(r.indices)[Math.floor(j / K)] === j % K ? 1 : 0))).toBeLessThan(1e-6))
      // d/dl_i sum_k w_k G_k with G_k = prod_i p_i^c_ki (1 - p_i)^(1 - c_ki) is sum_k w_k G_k (c_ki - p_i)
      const w = randn([3, K], seed + 1)
      const g = orThrow(await runOnHost(backend, [init.state, x, w, tensorOf([seed, 3], [2], 'int32')] as const, (s, xs, ws, key) =>
        valueAndGrad((xx: Tensor, ss: Named<Tensor>, ww: Tensor, kk: Tensor) => q.apply({}, ss, xx, { training: true, key: kk }).quantized.mul(ww).sum())(xs as Tensor, s as Named<Tensor>, ws as Tensor, key as Tensor)))
      const grad = arr(g.grad as unknown as HostTensor)
      for (let t = 0; t < 3; t++)
        for (let i = 0; i < bits; i++) {
          let want = 0
          for (let k = 0; k < K; k++) {
            let G = 1
            for (let j = 0; j < bits; j++) G *= (k >> j) & 1 ? sig(x.data[t * bits + j]!) : 1 - sig(x.data[t * bits + j]!)
            want += w.data[t * K + k]! * G * (((k >> i) & 1) - sig(x.data[t * bits + i]!))
          }
          expect(grad[t * bits + i]).toBeCloseTo(want, 4)
        }
    },
  )

  test.prop([fc.integer({ min: 1, max: 4 }), fc.nat(1000)], { numRuns: 15 })('logProb: by indices or by one-hot; per bit sums to the joint; the code probabilities sum to 1', async (bits, seed) => {
    const q = orThrow(binaryMapper({ bits, deterministic: true }))
    const K = 2 ** bits
    const x = randn([2, bits], seed, 2)
    const all = tensorOf(Array.from({ length: 2 * K }, (_, j) => j % K), [2, K], 'int32')
    const r = orThrow(await runOnHost(backend, [x, all] as const, (l, ks) => {
      const L = l as Tensor, I = ks as Tensor
      const tiled = L.expandDims(1).broadcastTo([2, K, bits])
      const res = q.apply({}, {}, L, { training: false })
      return {
        joint: q.logProb(tiled, { indices: I }),
        perBit: q.logProb(tiled, { indices: I }, false),
        chosen: q.logProb(L, { indices: res.indices }),
        viaOneHot: q.logProb(L, { oneHot: res.quantized }),
      }
    }))
    expect(r.perBit.shape).toEqual([2, K, bits])
    for (let t = 0; t < 2; t++) {
      let total = 0
      for (let k = 0; k < K; k++) {
        let want = 0
        for (let i = 0; i < bits; i++) want += logSig((k >> i) & 1 ? x.data[t * bits + i]! : -x.data[t * bits + i]!)
        expect(r.joint.data[t * K + k]).toBeCloseTo(want, 5)
        const bitsSum = arr(r.perBit).slice((t * K + k) * bits, (t * K + k + 1) * bits).reduce((s, v) => s + v, 0)
        expect(bitsSum).toBeCloseTo(r.joint.data[t * K + k]!, 5)
        total += Math.exp(r.joint.data[t * K + k]!)
      }
      expect(total).toBeCloseTo(1, 5)
    }
    expect(arr(r.viaOneHot)).toEqual(arr(r.chosen))
  })
})

describe('BinaryMapper config', () => {
  test.each([
    [{ bits: 0 }, 'BinaryMapper.bits'],
    [{ bits: 21 }, 'BinaryMapper.bits'],
    [{ bits: 1.5 }, 'BinaryMapper.bits'],
    [{ temperature: 0 }, 'BinaryMapper.temperature'],
    [{ temperature: NaN }, 'BinaryMapper.temperature'],
    [{ kl_loss_threshold: Infinity }, 'BinaryMapper.kl_loss_threshold'],
    [{ deterministic: 'yes' }, 'BinaryMapper.deterministic'],
    [{ straight_through: 1 }, 'BinaryMapper.straight_through'],
    [{ return_indices: true }, 'BinaryMapper.return_indices'],
  ])('%j is a config Left at %s', (input, where) => {
    const r = decodeBinaryMapper(input)
    expect(E.isLeft(r) && [r.left.kind, r.left.where]).toEqual(['config', where])
  })
  test('defaults are the reference: 1 bit, threshold ln 2, sampling in eval too, mode-dependent straight-through and aux loss', () => {
    const c = orThrow(decodeBinaryMapper({}))
    expect([c.bits, c.num_codes, c.kl_loss_threshold, c.deterministic_on_eval, c.temperature, c.straight_through, c.calc_aux_loss, c.deterministic]).toEqual([1, 2, NAT, false, 1, null, null, null])
  })
})
