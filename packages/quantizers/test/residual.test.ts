import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import type { HostTensor, Tensor } from '@tessera/core'
import { random, scoped, tensorOf } from '@tessera/core'
import { decodeResidualFSQ, makeResidualFSQ } from '../src/residual/residual-fsq.js'
import { decodeResidualLFQ, makeResidualLFQ } from '../src/residual/residual-lfq.js'
import type { Residual } from '../src/residual/residual.js'
import type { Named } from '../src/quantizer.js'
import { applyQ, arr, backends, decodeQ, expectClose, orThrow, randn, runOnHost } from './helpers.js'

async function codesOf(backend: (typeof backends)[number], q: Residual, init: { params: Named<HostTensor>; state: Named<HostTensor> }, indices: HostTensor) {
  return orThrow(
    await runOnHost(backend, [init.params, init.state, indices] as const, (p, s, i) =>
      q.codesFromIndices(p as Named<Tensor>, i as Tensor, s as Named<Tensor>),
    ),
  )
}

/** Σ_q codes[q] on the host, (q, ...) -> (...) */
function sumLayers(codes: HostTensor): number[] {
  const nq = codes.shape[0]!, per = codes.data.length / nq
  return Array.from({ length: per }, (_, i) => {
    let s = 0
    for (let k = 0; k < nq; k++) s = Math.fround(s + codes.data[k * per + i]!)
    return s
  })
}

describe.each(backends.map((b) => [b.name, b] as const))('residual quantizers on %s', (_name, backend) => {
  test.prop(
    [fc.array(fc.integer({ min: 3, max: 8 }), { minLength: 1, maxLength: 4 }), fc.integer({ min: 1, max: 4 }), fc.boolean(), fc.boolean(), fc.nat(1000)],
    { numRuns: 30 },
  )('ResidualFSQ: shapes, layer outputs sum to the reconstruction, indicesToCodes(indices) == quantized', async (levels, nq, withDim, channelFirst, seed) => {
    const dim = withDim ? levels.length + 2 : levels.length
    const q = makeResidualFSQ(orThrow(decodeResidualFSQ({ levels, num_quantizers: nq, dim, is_channel_first: channelFirst })))
    const init = q.init(random.keyFromSeed(seed))
    const x = randn(channelFirst ? [2, dim, 2, 2] : [2, 5, dim], seed)
    const r = await applyQ(backend, q, init, x)
    expect(r.quantized.shape).toEqual(x.shape)
    expect(r.indices.shape).toEqual(channelFirst ? [2, nq, 2, 2] : [2, 5, nq])
    // layer q's output times its scale is exactly what all_codes[q] holds, and the sum (before project_out) is the output
    const codes = await codesOf(backend, q, init, r.indices)
    const sum = sumLayers(codes)
    expect(sum).toEqual(arr(r.extra['quantized_before_project_out']!))
    expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
    // each layer quantizes what the earlier layers left: input_q = (h - Σ_{j<q} out_j) / scale_q
    const scales = arr(init.state['scales']!)
    const d = levels.length
    let residual = arr(r.extra['project_in_output']!).map((v, i) => Math.tanh(v / arr(init.state['soft_clamp_input_value']!)[i % d]!) * arr(init.state['soft_clamp_input_value']!)[i % d]!)
    for (let k = 0; k < nq; k++) {
      const input = arr(r.extra[`layer${k}_input`]!)
      input.forEach((v, i) => expect(Math.abs(v - residual[i]! / scales[k * d + (i % d)]!)).toBeLessThan(1e-4 * Math.max(1, Math.abs(v))))
      const out = arr(r.extra[`layer${k}_output`]!)
      residual = residual.map((v, i) => v - out[i]! * scales[k * d + (i % d)]!)
    }
  })

  test.prop([fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.nat(1000)], { numRuns: 25 })(
    'ResidualLFQ: layer q uses codebook scale 2^-q; outputs sum to the reconstruction',
    async (bits, nq, seed) => {
      const q = makeResidualLFQ(orThrow(decodeResidualLFQ({ dim: bits + 1, codebook_size: 2 ** bits, num_quantizers: nq })))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([2, 4, bits + 1], seed)
      const r = await applyQ(backend, q, init, x)
      expect(r.indices.shape).toEqual([2, 4, nq])
      expect(r.extra['all_losses']!.shape).toEqual([nq])
      const codes = await codesOf(backend, q, init, r.indices)
      const per = codes.data.length / nq
      for (let k = 0; k < nq; k++) for (let i = 0; i < per; i++) expect(Math.abs(codes.data[k * per + i]!)).toBe(2 ** -k)
      expect(sumLayers(codes)).toEqual(arr(r.extra['quantized_before_project_out']!))
      expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
      for (let k = 0; k < nq; k++) expect(arr(init.state[`layers.${k}.codebook`]!).every((v) => Math.abs(v) === 2 ** -k)).toBe(true)
    },
  )

  test.prop([fc.integer({ min: 2, max: 5 }), fc.integer({ min: 0, max: 1 }), fc.nat(1000)], { numRuns: 25 })(
    'quantize dropout (keyed): layers after the cut give index -1 and nothing to the output',
    async (nq, cutoff, seed) => {
      const q = makeResidualFSQ(orThrow(decodeResidualFSQ({ levels: [5, 5, 3], num_quantizers: nq, quantize_dropout: true, quantize_dropout_cutoff_index: cutoff })))
      const init = q.init(random.keyFromSeed(seed))
      const x = randn([1, 4, 3], seed)
      const r = await applyQ(backend, q, init, x, { training: true, key: [seed, 3] })
      const idx = arr(r.indices)
      const active = Array.from({ length: nq }, (_, k) => idx[k] !== -1)
      const cut = active.lastIndexOf(true)
      expect(cut).toBeGreaterThanOrEqual(cutoff)
      for (let t = 0; t < 4; t++) for (let k = 0; k < nq; k++) expect(idx[t * nq + k] === -1).toBe(k > cut)
      // the same key gives the same cut; decoding the dropped indices reproduces the output
      const again = await applyQ(backend, q, init, x, { training: true, key: [seed, 3] })
      expect(arr(again.indices)).toEqual(idx)
      expectClose(await decodeQ(backend, q, init, r.indices), r.quantized, 1e-6)
      // fewer layers of indices decode like dropped ones
      const coarse = tensorOf(Int32Array.from({ length: 4 * (cut + 1) }, (_, i) => idx[Math.floor(i / (cut + 1)) * nq + (i % (cut + 1))]!), [1, 4, cut + 1], 'int32')
      expectClose(await decodeQ(backend, q, init, coarse), r.quantized, 1e-6)
    },
  )

  test('state is split per layer under layers.{q}. with the reference scales', async () => {
    const q = makeResidualFSQ(orThrow(decodeResidualFSQ({ levels: [8, 5, 5, 3], num_quantizers: 3, dim: 6 })))
    const init = q.init(random.keyFromSeed(5))
    expect(Object.keys(init.params).sort()).toEqual(['project_in.bias', 'project_in.weight', 'project_out.bias', 'project_out.weight'])
    expect(Object.keys(init.state)).toContain('layers.2.implicit_codebook')
    expect(Object.keys(scoped(init.state, 'layers.1.')).sort()).toEqual(['_basis', '_levels', 'implicit_codebook'])
    expect(arr(init.state['scales']!).slice(4, 8)).toEqual([1 / 8, 1 / 5, 1 / 5, 1 / 3].map(Math.fround))
  })
})
