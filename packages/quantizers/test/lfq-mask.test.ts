import { expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { localCollectives, random, runCollective, tensorOf, traceOrThrow } from '@tessera/core'
import { lfq } from '../src/lfq/lfq.js'
import type { LFQ } from '../src/lfq/lfq.js'
import { residualLFQ } from '../src/residual/residual-lfq.js'
import { groupedResidualLFQ } from '../src/grouped/grouped-residual.js'
import type { Init, Named } from '../src/quantizer.js'
import type { HostApplyResult } from '../src/run.js'
import { applyOnHost } from '../src/run.js'
import { arr, orThrow, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { nodeLanes } from './zoo.js'

/**
 * LFQ's `mask` (the reference's forward argument): the entropy terms and the commitment loss are
 * over the kept tokens only; quantized values and indices are those of an unmasked call.
 */

/** Float64 LFQ losses over the given tokens (each (c, d)), against the ±1 codebook (most significant bit first). */
function losses64(toks: readonly number[][][], d: number, invT: number, gamma: number) {
  const K = 2 ** d
  const code = (k: number, j: number) => (Math.floor(k / 2 ** (d - 1 - j)) % 2) * 2 - 1
  const H = (p: readonly number[]) => p.reduce((s, v) => s - v * Math.log(Math.max(v, 1e-5)), 0)
  const c = toks[0]!.length
  const probs = toks.map((tok) =>
    tok.map((z) => {
      const logit = Array.from({ length: K }, (_, k) => 2 * invT * z.reduce((s, v, j) => s + v * code(k, j), 0))
      const m = Math.max(...logit)
      const e = logit.map((l) => Math.exp(l - m))
      const sum = e.reduce((a, v) => a + v, 0)
      return e.map((v) => v / sum)
    }),
  )
  const perSample = probs.flat().reduce((s, p) => s + H(p), 0) / (toks.length * c)
  let batch = 0
  for (let ci = 0; ci < c; ci++) batch += H(Array.from({ length: K }, (_, k) => probs.reduce((s, p) => s + p[ci]![k]!, 0) / toks.length)) / c
  const commit = toks.flat(2).reduce((s, v) => s + (v - (v > 0 ? 1 : -1)) ** 2, 0) / (toks.length * c * d)
  return { perSample, batch, aux: perSample - gamma * batch, commit }
}

/** The (b·n) tokens of x (b, n, c·d) as (c, d) lists. */
const tokensOf = (x: HostTensor, c: number, d: number): number[][][] => {
  const v = arr(x), M = v.length / (c * d)
  return Array.from({ length: M }, (_, m) => Array.from({ length: c }, (_, ci) => v.slice((m * c + ci) * d, (m * c + ci + 1) * d)))
}

const boolOf = (bits: readonly boolean[], shape: readonly number[]) => tensorOf(bits.map(Number), shape, 'bool')
const key = tensorOf([3, 11], [2], 'int32')

const run = async (backend: Backend, q: LFQ, init: Init, x: HostTensor, mask: HostTensor | undefined, training = true): Promise<HostApplyResult> =>
  orThrow(await applyOnHost(q, { ...init, x, training, key, ...(mask ? { options: { mask } } : {}) }, backend))

const lossesOf = (r: HostApplyResult) => ({
  loss: r.loss.data[0]!,
  perSample: r.losses['per_sample_entropy']!.data[0]!,
  batch: r.losses['batch_entropy']!.data[0]!,
  commit: r.losses['commitment']!.data[0]!,
})

const close = (got: number, want: number, what: string) => expect(Math.abs(got - want), `${what}: ${got} vs ${want}`).toBeLessThan(2e-5 * Math.max(1, Math.abs(want)))

/** A mask (b) or (b, n) keeping at least one token, and its (b·n) token view. */
const maskArb = (b: number, n: number) =>
  fc.oneof(
    fc.array(fc.boolean(), { minLength: b, maxLength: b }).map((m) => ({ shape: [b], bits: m })),
    fc.array(fc.boolean(), { minLength: b * n, maxLength: b * n }).map((m) => ({ shape: [b, n], bits: m })),
  ).filter((m) => m.bits.some((v) => v))
const keptTokens = (m: { shape: number[]; bits: boolean[] }, n: number): boolean[] => (m.shape.length === 1 ? m.bits.flatMap((v) => Array<boolean>(n).fill(v)) : m.bits)

describeLanes('lfq-mask', nodeLanes, (l) => `LFQ mask on ${l.name}`, (backend) => {
  const B = 2, N = 4

  test.prop([fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 2 }), fc.constantFrom(1, 5), fc.double({ min: 0, max: 2, noNaN: true }), fc.nat(1000), fc.nat(1000)], { numRuns: 6 })(
    'losses are a float64 computation over the kept tokens; masked tokens change no loss; outputs are the unmasked call\'s',
    async (bits, c, invT, gamma, seed, seed2) => {
      const q = orThrow(lfq({ codebook_size: 2 ** bits, num_codebooks: c, inv_temperature: invT, diversity_gamma: gamma, commitment_loss_weight: 0.5, entropy_loss_weight: 0.1 }))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([B, N, bits * c], seed, 0.5)
      const m = fc.sample(maskArb(B, N), { seed, numRuns: 1 })[0]!
      const kept = keptTokens(m, N)
      const r = await run(backend, q, init, x, boolOf(m.bits, m.shape))
      const want = losses64(tokensOf(x, c, bits).filter((_, t) => kept[t]), bits, invT, gamma)
      const got = lossesOf(r)
      close(got.perSample, want.perSample, 'per_sample_entropy')
      close(got.batch, want.batch, 'batch_entropy')
      close(got.commit, want.commit, 'commitment')
      close(got.loss, 0.1 * want.aux + 0.5 * want.commit, 'loss')
      // other values at the masked-out tokens: every loss is bit for bit the same
      const other = randn(x.shape, seed2 + 1000, 3)
      const xv = arr(x), ov = arr(other), width = bits * c
      const x2 = tensorOf(xv.map((v, i) => (kept[Math.floor(i / width)] ? v : ov[i]!)), x.shape)
      const r2 = await run(backend, q, init, x2, boolOf(m.bits, m.shape))
      expect(lossesOf(r2)).toEqual(got)
      // quantized values and indices are computed at every position, as without a mask
      const plain = await run(backend, q, init, x, undefined)
      expect(arr(r.quantized)).toEqual(arr(plain.quantized))
      expect(arr(r.indices)).toEqual(arr(plain.indices))
    },
  )

  test('an all-true mask, (b) or (b, n), is the unmasked call (frac_per_sample_entropy 1 exactly; 0.5 draws the same subset)', async () => {
    for (const frac of [1, 0.5]) {
      const q = orThrow(lfq({ codebook_size: 8, num_codebooks: 2, commitment_loss_weight: 0.25, inv_temperature: 5, frac_per_sample_entropy: frac }))
      const init = q.init(random.keyFromSeed(4))
      const x = randn([B, N, 6], 4, 0.5)
      const plain = await run(backend, q, init, x, undefined)
      for (const shape of [[B], [B, N]]) {
        const r = await run(backend, q, init, x, boolOf(Array<boolean>(shape.reduce((a, v) => a * v, 1)).fill(true), shape))
        expect(arr(r.quantized)).toEqual(arr(plain.quantized))
        expect(arr(r.indices)).toEqual(arr(plain.indices))
        const got = lossesOf(r), want = lossesOf(plain)
        // frac 1: the same sums of the same values; frac 0.5: the one-process subset summed in token order, not draw order
        if (frac === 1) expect(got).toEqual(want)
        else for (const k of Object.keys(want) as (keyof typeof want)[]) expect(Math.abs(got[k] - want[k]), k).toBeLessThan(1e-6 * Math.max(1, Math.abs(want[k])))
      }
    }
  })

  test('frac_per_sample_entropy < 1 samples int(kept · frac) of the kept tokens with the key', async () => {
    const frac = 0.6
    const q = orThrow(lfq({ codebook_size: 8, frac_per_sample_entropy: frac, inv_temperature: 1 }))
    const init = q.init(random.keyFromSeed(5))
    const x = randn([B, 5, 3], 5)
    const kept = [true, false, true, true, false, true, true, false, true, true]
    const r = await run(backend, q, init, x, boolOf(kept, [B, 5]))
    const u = random.uniformHost([3, 11], 10)
    const order = Array.from({ length: 10 }, (_, i) => i).filter((i) => kept[i]).sort((a, b) => u[a]! - u[b]! || a - b)
    const chosen = order.slice(0, Math.floor(order.length * frac))
    const all = tokensOf(x, 1, 3)
    const want = losses64(chosen.map((i) => all[i]!), 3, 1, 1)
    close(lossesOf(r).perSample, want.perSample, 'per_sample_entropy')
    close(lossesOf(r).batch, want.batch, 'batch_entropy')
  })

  test('a bad mask is a Left naming mask (dtype, shape, not a tensor), in eval too; eval accepts a good one', async () => {
    const q = orThrow(lfq({ codebook_size: 8 }))
    const init = q.init(random.keyFromSeed(6))
    const x = randn([B, N, 3], 6)
    const bad = async (mask: unknown, training: boolean) => {
      const r = await applyOnHost(q, { ...init, x, training, key, options: { mask } as never }, backend)
      expect(E.isLeft(r)).toBe(true)
      if (E.isLeft(r)) expect(`${r.left.where} ${r.left.message}`).toMatch(/mask/)
      return E.isLeft(r) ? r.left.message : ''
    }
    for (const training of [true, false]) {
      expect(await bad(tensorOf(Array<number>(B * N).fill(1), [B, N], 'float32'), training)).toMatch(/bool/)
      expect(await bad(tensorOf(Array<number>(B * (N + 1)).fill(1), [B, N + 1], 'bool'), training)).toMatch(/\(2\) .*\(2, 4\)/)
      expect(await bad(tensorOf([1, 1, 1], [3], 'bool'), training)).toMatch(/got bool\[3\]/)
      await bad([true, false], training)
    }
    const ev = await run(backend, q, init, x, boolOf([true, false], [B]), false)
    const plain = await run(backend, q, init, x, undefined, false)
    expect(arr(ev.quantized)).toEqual(arr(plain.quantized))
    expect(ev.loss.data[0]).toBe(0)
  })

  test('channel-first feature maps take a (b) or (b, h·w) mask over the packed tokens', async () => {
    const q = orThrow(lfq({ codebook_size: 16, commitment_loss_weight: 1 }))
    const init = q.init(random.keyFromSeed(7))
    const x = randn([B, 4, 2, 2], 7) // (b, d, h, w)
    const kept = [true, false, false, true, true, true, false, false]
    const r = await run(backend, q, init, x, boolOf(kept, [B, 4]))
    const xv = arr(x)
    const toks = Array.from({ length: B * 4 }, (_, t) => [Array.from({ length: 4 }, (_, j) => xv[Math.floor(t / 4) * 16 + j * 4 + (t % 4)]!)])
    const want = losses64(toks.filter((_, t) => kept[t]), 4, 100, 1)
    close(lossesOf(r).commit, want.commit, 'commitment')
    close(lossesOf(r).perSample, want.perSample, 'per_sample_entropy')
    close(lossesOf(r).batch, want.batch, 'batch_entropy')
  })

  test('ResidualLFQ hands the mask to every layer (each layer\'s losses over the kept tokens of its input; the residual moves at masked tokens too)', async () => {
    const rq = orThrow(residualLFQ({ dim: 3, codebook_size: 8, num_quantizers: 2, commitment_loss_weight: 0.5 }))
    const init = rq.init(random.keyFromSeed(8))
    const x = randn([B, N, 3], 8, 0.7)
    const kept = [true, true, false, true, false, false, true, true]
    const mask = boolOf(kept, [B, N])
    const r = orThrow(await applyOnHost(rq, { ...init, x, training: true, key, options: { mask } }, backend))
    const plain = orThrow(await applyOnHost(rq, { ...init, x, training: true, key }, backend))
    expect(arr(r.quantized)).toEqual(arr(plain.quantized))
    expect(arr(r.indices)).toEqual(arr(plain.indices))
    for (let i = 0; i < 2; i++) {
      const input = r.extra[`layer${i}_input`]!
      // layer i's codes are ±2^-i: scale its input to the ±1 codebook of losses64 (entropy uses inv_temperature·<z, code>)
      const s = 2 ** -i
      const toks = tokensOf(input, 1, 3).filter((_, t) => kept[t])
      const want = losses64(toks.map((tk) => tk.map((z) => z.map((v) => v * s))), 3, 100, 1)
      close(r.losses[`layers.${i}.per_sample_entropy`]!.data[0]!, want.perSample, `layer ${i} per_sample_entropy`)
      close(r.losses[`layers.${i}.batch_entropy`]!.data[0]!, want.batch, `layer ${i} batch_entropy`)
      const commit = toks.flat(2).reduce((a, v) => a + (v - (v > 0 ? s : -s)) ** 2, 0) / (toks.length * 3)
      close(r.losses[`layers.${i}.commitment`]!.data[0]!, commit, `layer ${i} commitment`)
    }
    const bad = await applyOnHost(rq, { ...init, x, training: true, key, options: { mask: tensorOf([1, 0, 1], [3], 'bool') } }, backend)
    expect(E.isLeft(bad) && bad.left.where).toMatch(/mask/)
  })

  test('GroupedResidualLFQ hands the mask to each group (as the reference): group g is ResidualLFQ on its features with that mask', async () => {
    const opts = { codebook_size: 8, num_quantizers: 2, commitment_loss_weight: 0.5 }
    const gq = orThrow(groupedResidualLFQ({ dim: 6, groups: 2, ...opts }))
    const rq = orThrow(residualLFQ({ dim: 3, ...opts }))
    const init = gq.init(random.keyFromSeed(10))
    const x = randn([B, N, 6], 10, 0.7)
    const mask = boolOf([true, false, true, true, false, true, false, true], [B, N])
    const r = orThrow(await applyOnHost(gq, { ...init, x, training: true, key, options: { mask } }, backend))
    for (let g = 0; g < 2; g++) {
      const part = (rec: Readonly<Record<string, HostTensor>>) => Object.fromEntries(Object.entries(rec).filter(([k]) => k.startsWith(`rvqs.${g}.`)).map(([k, v]) => [k.slice(`rvqs.${g}.`.length), v]))
      const xg = tensorOf(arr(x).filter((_, i) => Math.floor((i % 6) / 3) === g), [B, N, 3])
      const one = orThrow(await applyOnHost(rq, { params: part(init.params), state: part(init.state), x: xg, training: true, key, options: { mask } }, backend))
      for (const [k, v] of Object.entries(one.losses)) expect(r.losses[`rvqs.${g}.${k}`]!.data[0], `group ${g} ${k}`).toBe(v.data[0])
    }
  })

  test('with a world, the kept tokens are counted over every rank: 2 ranks match one process (frac 1 and 0.5)', async () => {
    const b = 4, n = 3
    const x = randn([b, n, 4], 9, 0.5)
    const keep = [1, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1]
    for (const frac of [1, 0.5]) {
      const q = orThrow(lfq({ codebook_size: 4, num_codebooks: 2, commitment_loss_weight: 0.5, inv_temperature: 5, frac_per_sample_entropy: frac }))
      const init = q.init(random.keyFromSeed(9))
      const step = async (rows: number, xs: HostTensor, m: readonly number[], comm: ReturnType<typeof localCollectives>[number], world: boolean) => {
        const mt = tensorOf(m, [rows, n], 'bool')
        const traced = traceOrThrow([init.params, init.state, xs, key, mt] as const, (p: Named<Tensor>, s: Named<Tensor>, xt: Tensor, k: Tensor, mk: Tensor) => {
          const r = q.apply(p, s, xt, { training: true, key: k, mask: mk, ...(world ? { world: { size: comm.size } } : {}) })
          return [r.losses['per_sample_entropy']!, r.losses['batch_entropy']!, r.losses['commitment']!] as const
        })
        const out = orThrow(await runCollective(backend, traced.program, [...Object.values(init.params), ...Object.values(init.state), xs, key, mt], comm))
        return out.map((t) => t.data[0]!)
      }
      const one = await step(b, x, keep, localCollectives(1)[0]!, false)
      if (frac === 1) {
        const want = losses64(tokensOf(x, 2, 2).filter((_, t) => keep[t]), 2, 5, 1)
        close(one[0]!, want.perSample, 'one process per_sample_entropy')
        close(one[1]!, want.batch, 'one process batch_entropy')
        close(one[2]!, want.commit, 'one process commitment')
      }
      const ranks = await Promise.all(
        localCollectives(2).map((cm) => step(2, tensorOf(x.data.slice(cm.rank * 24, (cm.rank + 1) * 24), [2, n, 4]), keep.slice(cm.rank * 6, (cm.rank + 1) * 6), cm, true)),
      )
      // the batch entropy is the one-process value on every rank; per-rank entropy and commitment average to it
      for (const r of ranks) close(r[1]!, one[1]!, `frac ${frac} batch_entropy`)
      close((ranks[0]![0]! + ranks[1]![0]!) / 2, one[0]!, `frac ${frac} per_sample_entropy`)
      close((ranks[0]![2]! + ranks[1]![2]!) / 2, one[2]!, `frac ${frac} commitment`)
    }
  })
})
