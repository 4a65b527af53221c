import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { caseRunners } from '../src/golden/cases.js'
import { compareTensor } from '../src/golden/compare.js'
import type { GoldenCase, GoldenTensor } from '../src/golden/format.js'
import { parseGoldenCase } from '../src/golden/format.js'
import { runCase } from '../src/golden/runner.js'
import { META_CLASS, META_KWARGS, QUANTIZER_FACTORIES, fromSafetensors, loadTorchStateDict } from '../src/io/torch.js'
import { decodeSafetensors } from '../src/io/safetensors.js'
import { applyOnHost, compileCache } from '../src/run.js'
import { backends, goldenDir, orThrow, readGoldenDir } from './helpers.js'
import type { FileEntry } from './torch-files.js'
import { TORCH_NON_PERSISTENT, toBf16Bits, toHalfBits, torchStateOf, withFileDtypes, writeSafetensors } from './torch-files.js'

const backend = backends[0]!

/** Every golden case in the repository (the folder and next/), parsed. */
async function goldenCases(): Promise<GoldenCase[]> {
  const files = [...(await readGoldenDir(goldenDir)), ...(await readGoldenDir(join(goldenDir, 'next')))]
  return files.map((f) => orThrow(parseGoldenCase(f.text, f.name))).sort((a, b) => (a.name < b.name ? -1 : 1))
}

const meta = (className: string, kwargs: unknown) => ({ [META_CLASS]: className, [META_KWARGS]: JSON.stringify(kwargs) })
const asGolden = (rec: Readonly<Record<string, HostTensor>>): Record<string, GoldenTensor> =>
  Object.fromEntries(Object.entries(rec).map(([k, host]) => [k, { refDtype: host.dtype, host }]))

describe('PyTorch state dicts in one call (fromSafetensors, loadTorchStateDict)', () => {
  it('every golden case: its torch state_dict as safetensors (F16/BF16/F64/I64 entries included) loads with one call and reproduces the recorded outputs', async () => {
    const cases = await goldenCases()
    const cache = compileCache()
    const used = new Set<string>()
    const loadedClasses: string[] = []
    try {
      for (const c of cases) {
        const factory = Object.hasOwn(QUANTIZER_FACTORIES, c.className) ? QUANTIZER_FACTORIES[c.className] : undefined
        if (!factory) {
          // a class the library lacks is refused by name, not loaded into something else
          const bytes = writeSafetensors({}, meta(c.className, c.kwargs))
          const r = fromSafetensors(bytes)
          expect(E.isLeft(r) && r.left.message, c.name).toMatch(new RegExp(`class ${c.className} is not in the library`))
          continue
        }
        const q = orThrow(factory(c.kwargs))
        const entries = withFileDtypes(torchStateOf(c, q))
        for (const e of Object.values(entries)) used.add(e.dtype)
        const loaded = fromSafetensors(writeSafetensors(entries, meta(c.className, c.kwargs)))
        if (E.isLeft(loaded)) throw new Error(`${c.name}: ${loaded.left.message}`)
        const { quantizer, params, state } = loaded.right
        expect(quantizer.kind, c.name).toBe(c.className)
        loadedClasses.push(c.className)

        // 1. the golden runner on the loaded params and state: every recorded output of every run
        const original = await runCase(c, caseRunners, { backend, cache })
        const mine = await runCase({ ...c, state: asGolden({ ...params, ...state }) }, caseRunners, { backend, cache })
        expect(mine.error, c.name).toBeUndefined()
        expect(mine.runs.map((r) => [r.name, r.status, r.reason]), c.name).toEqual(original.runs.map((r) => [r.name, r.status, r.reason]))
        for (const [i, run] of mine.runs.entries()) {
          if (run.status === 'unsupported') continue
          expect(run.status, `${c.name}.${run.name}: ${run.checks.filter((k) => !k.ok).map((k) => k.name).join(', ')}`).toBe('pass')
          expect(run.checks.map((k) => k.name), `${c.name}.${run.name}`).toEqual(original.runs[i]!.checks.map((k) => k.name))
        }

        // 2. applying the loaded quantizer directly: eval runs on x alone, with no key
        for (const run of c.runs) {
          if (run.mode !== 'eval' || Object.keys(run.inputs).length !== 1 || Object.keys(run.callKwargs).length !== 0) continue
          const out = orThrow(await applyOnHost(quantizer, { params, state, x: run.inputs['x']!.host }, backend, cache))
          for (const name of ['quantized', 'indices'] as const) {
            const want = run.outputs[name]
            if (!want || want.host.shape.join() !== out[name].shape.join()) continue
            const check = compareTensor(name, out[name], want)
            expect(check.ok, `${c.name}.${run.name}.${name}: worst ${check.worst}, ${check.mismatches} mismatches`).toBe(true)
          }
        }
      }
    } finally {
      cache.dispose()
    }
    expect(new Set(loadedClasses)).toEqual(new Set(['FSP', 'FSQ', 'LFQ', 'ResidualFSQ', 'ResidualVQ', 'VectorQuantize', 'GroupedResidualFSQ', 'GroupedResidualVQ', 'SimVQ', 'HierarchicalVQ']))
    expect([...used].sort()).toEqual(['BF16', 'BOOL', 'F16', 'F32', 'F64', 'I64'])
  })

  it('every class in QUANTIZER_FACTORIES: a fresh init without the non-persistent buffers loads back to that init exactly (derived buffers do not depend on the key)', () => {
    const configs: Record<string, object> = {
      VectorQuantize: { dim: 8, codebook_size: 16, kmeans_init: true, heads: 2, separate_codebook_per_head: true, codebook_dim: 4 },
      ResidualVQ: { dim: 8, codebook_size: 16, num_quantizers: 3, codebook_dim: 4 },
      GroupedResidualVQ: { dim: 8, groups: 2, codebook_size: 16, num_quantizers: 2, shared_codebook: true },
      FSQ: { levels: [8, 5, 5, 5], dim: 8, orthogonal_rotation: true },
      ResidualFSQ: { dim: 8, levels: [8, 5, 5, 3], num_quantizers: 3 },
      GroupedResidualFSQ: { dim: 8, groups: 2, levels: [5, 5, 3], num_quantizers: 2 },
      FSP: { levels: [5, 5], dim: 4 },
      LFQ: { codebook_size: 16, dim: 8, orthogonal_rotation: true },
      ResidualLFQ: { dim: 8, codebook_size: 16, num_quantizers: 2 },
      GroupedResidualLFQ: { dim: 8, groups: 2, codebook_size: 16, num_quantizers: 2 },
      LatentQuantize: { levels: [5, 5, 8], dim: 6 },
      SimVQ: { dim: 8, codebook_size: 16 },
      ResidualSimVQ: { dim: 8, codebook_size: 16, num_quantizers: 2 },
      RandomProjectionQuantizer: { dim: 8, codebook_size: 16, codebook_dim: 4, num_codebooks: 2 },
      HierarchicalVQ: { dim: 4, codebook_size: 16, scales: [1, 2, 4], accept_image_fmap: true, share_quant_resi: 0 },
    }
    expect(Object.keys(configs).sort()).toEqual(Object.keys(QUANTIZER_FACTORIES).sort())
    for (const [cls, kwargs] of Object.entries(configs)) {
      const q = orThrow(QUANTIZER_FACTORIES[cls]!(kwargs))
      const init = q.init(random.keyFromSeed(11))
      const torchLike = Object.fromEntries(Object.entries({ ...init.params, ...init.state }).filter(([k]) => !TORCH_NON_PERSISTENT.some((n) => k === n || k.endsWith(`.${n}`))))
      // a shared codebook is listed by torch under every layer (here: each group's layer 1)
      if ('shared_codebook' in kwargs)
        for (const [k, t] of Object.entries(torchLike)) if (k.includes('layers.0._codebook.')) torchLike[k.replace('layers.0.', 'layers.1.')] = t
      const loaded = orThrow(fromSafetensors(writeSafetensors(withFileDtypes(Object.fromEntries(Object.entries(torchLike).map(([k, t]) => [k, { t, ref: t.dtype }]))), meta(cls, kwargs))))
      expect(loaded.quantizer.kind, cls).toBe(cls)
      expect(Object.keys(loaded.params).sort(), cls).toEqual(Object.keys(init.params).sort())
      expect(Object.keys(loaded.state).sort(), cls).toEqual(Object.keys(init.state).sort())
      for (const [k, t] of Object.entries({ ...init.params, ...init.state }))
        expect(Array.from({ ...loaded.params, ...loaded.state }[k]!.data), `${cls} ${k}`).toEqual(Array.from(t.data))
    }
  })

  it('derives the non-persistent buffers from the config, and still refuses a missing persistent entry by name', () => {
    const q = orThrow(QUANTIZER_FACTORIES['ResidualFSQ']!({ dim: 8, levels: [8, 5, 5, 3], num_quantizers: 3 }))
    const init = q.init(random.keyFromSeed(3))
    const loaded = orThrow(loadTorchStateDict(q, init.params))
    expect(Object.keys(loaded.state).sort()).toEqual(Object.keys(init.state).sort())
    for (const [k, t] of Object.entries(init.state)) expect(Array.from(loaded.state[k]!.data), k).toEqual(Array.from(t.data))
    const { ['project_out.bias']: _gone, ...partial } = init.params
    const missing = loadTorchStateDict(q, partial)
    expect(E.isLeft(missing) && missing.left.where).toBe('state-dict[project_out.bias]')
    const extra = loadTorchStateDict(q, { ...init.params, 'project_mid.weight': init.params['project_in.weight']! })
    expect(E.isLeft(extra) && extra.left.where).toBe('state-dict[project_mid.weight]')
  })

  it('a shared-codebook ResidualVQ: torch repeats the codebook under every layer; equal copies load, a tampered copy is refused by name', async () => {
    const c = (await goldenCases()).find((k) => k.name === 'rvq_basic')!
    const kwargs = { ...c.kwargs, shared_codebook: true }
    const shared = orThrow(QUANTIZER_FACTORIES['ResidualVQ']!(kwargs))
    expect(Object.keys(shared.stateSpecs).every((n) => n.startsWith('layers.0.'))).toBe(true)
    const fresh = shared.init(random.keyFromSeed(1))
    const layer0: Record<string, HostTensor> = { ...fresh.state, 'layers.0._codebook.embed': c.state['layers.0._codebook.embed']!.host }
    // torch's state_dict of the module: one Codebook object reached from three layers
    const torchSd: Record<string, FileEntry> = {}
    for (const layer of [0, 1, 2])
      for (const [name, t] of Object.entries(layer0)) torchSd[name.replace('layers.0.', `layers.${layer}.`)] = { t, dtype: t.dtype === 'bool' ? 'BOOL' : 'F32' }
    const loaded = orThrow(fromSafetensors(writeSafetensors(torchSd, meta('ResidualVQ', kwargs))))
    expect(Object.keys(loaded.state).sort()).toEqual(Object.keys(layer0).sort())

    // the shared codebook quantizes like three separate layers each holding that codebook
    const separate = orThrow(QUANTIZER_FACTORIES['ResidualVQ']!(c.kwargs))
    const sepSd = Object.fromEntries(Object.entries(torchSd).map(([k, e]) => [k, e.t]))
    const sep = orThrow(loadTorchStateDict(separate, sepSd))
    const x = c.runs[0]!.inputs['x']!.host
    const a = orThrow(await applyOnHost(loaded.quantizer, { params: loaded.params, state: loaded.state, x }, backend))
    const b = orThrow(await applyOnHost(separate, { ...sep, x }, backend))
    expect(Array.from(a.indices.data)).toEqual(Array.from(b.indices.data))
    expect(Array.from(a.quantized.data)).toEqual(Array.from(b.quantized.data))

    // a copy that differs from layer 0's is refused, naming it and the element
    const tampered = Array.from(torchSd['layers.2._codebook.embed']!.t.data)
    tampered[5] = tampered[5]! + 0.5
    const bad = fromSafetensors(writeSafetensors({ ...torchSd, 'layers.2._codebook.embed': { t: tensorOf(tampered, [1, 16, 8]), dtype: 'F32' } }, meta('ResidualVQ', kwargs)))
    expect(E.isLeft(bad) && bad.left.where).toBe('state-dict[layers.2._codebook.embed]')
    expect(E.isLeft(bad) && bad.left.message).toMatch(/differs from layers\.0\._codebook\.embed \(element 5/)
    const flag = loadTorchStateDict(shared, { ...sepSd, 'layers.1._codebook.initted': tensorOf([0], [], 'bool') })
    expect(E.isLeft(flag) && flag.left.where).toBe('state-dict[layers.1._codebook.initted]')
    // a copy without the entry it copies
    const { ['layers.0._codebook.cluster_size']: _cs, ...noFirst } = sepSd
    const orphan = loadTorchStateDict(shared, noFirst)
    expect(E.isLeft(orphan) && orphan.left.message).toMatch(/copy of the shared codebook entry layers\.0\._codebook\.cluster_size/)
  })

  it('k-means VQ and ResidualVQ with initted true run in eval without a key (same outputs as with one); not initted still needs one', async () => {
    const cases = await goldenCases()
    for (const [name, cls] of [['vq_euclidean', 'VectorQuantize'], ['rvq_basic', 'ResidualVQ']] as const) {
      const c = cases.find((k) => k.name === name)!
      const kwargs = { ...c.kwargs, kmeans_init: true }
      const q = orThrow(QUANTIZER_FACTORIES[cls]!(kwargs))
      const sd = torchStateOf(c, orThrow(QUANTIZER_FACTORIES[cls]!(c.kwargs)))
      const entries = withFileDtypes(sd)
      const loaded = orThrow(fromSafetensors(writeSafetensors(entries, meta(cls, kwargs))))
      for (const [k, t] of Object.entries(loaded.state)) if (k.endsWith('initted')) expect(t.data[0], k).toBe(1)
      const run = c.runs.find((r) => r.mode === 'eval')!
      const x = run.inputs['x']!.host
      const noKey = orThrow(await applyOnHost(q, { params: loaded.params, state: loaded.state, x }, backend))
      const keyed = orThrow(await applyOnHost(q, { params: loaded.params, state: loaded.state, x, key: tensorOf([5, 9], [2], 'int32') }, backend))
      expect(Array.from(noKey.indices.data), name).toEqual(Array.from(run.outputs['indices']!.host.data))
      expect(compareTensor('quantized', noKey.quantized, run.outputs['quantized']!).ok, name).toBe(true)
      for (const k of ['quantized', 'indices', 'loss'] as const) expect(Array.from(noKey[k].data), `${name} ${k}`).toEqual(Array.from(keyed[k].data))
      for (const [k, t] of Object.entries(keyed.state)) expect(Array.from(noKey.state[k]!.data), `${name} ${k}`).toEqual(Array.from(t.data))
      // not initted: k-means runs on this batch and needs a key; training always needs one
      const fresh = { ...loaded.state, ...Object.fromEntries(Object.keys(loaded.state).filter((k) => k.endsWith('initted')).map((k) => [k, tensorOf([0], [], 'bool')])) }
      const refused = await applyOnHost(q, { params: loaded.params, state: fresh, x }, backend)
      expect(E.isLeft(refused) && refused.left.message, name).toMatch(/kmeans_init.*needs a random key/)
      const train = await applyOnHost(q, { params: loaded.params, state: loaded.state, x, training: true }, backend)
      expect(E.isLeft(train) && train.left.message, name).toMatch(/needs a random key/)
    }
  })

  it('widening: F16 and BF16 exactly, F64 to the nearest float32; I64 narrows with a range check; an older float initted loads as bool', () => {
    const vals = [0, -0, 1, -2.5, 65504, 2 ** -24, 2 ** -14, 0.1, 1 / 3, 3.4e38, Infinity]
    const t = tensorOf(vals, [vals.length])
    const dec = (dtype: FileEntry['dtype'], tt: HostTensor = t) => orThrow(decodeSafetensors(writeSafetensors({ v: { t: tt, dtype } }))).tensors['v']!
    const f16 = dec('F16'), bf16 = dec('BF16')
    expect(Array.from(f16.data.slice(0, 7))).toEqual([0, -0, 1, -2.5, 65504, 2 ** -24, 2 ** -14])
    expect(Object.is(f16.data[1], -0)).toBe(true)
    expect(f16.data[7]).toBe(0.0999755859375) // the half nearest 0.1
    expect(f16.data[9]).toBe(Infinity) // too large for a half: the writer gives Inf
    expect(bf16.data[7]).toBe(0.10009765625)
    expect(bf16.data[10]).toBe(Infinity)
    // F64: the double nearest a value, then rounded to the nearest float32
    const f64 = dec('F64', { shape: [3], dtype: 'float32', data: Float64Array.of(0.1, 1 / 3, 1e-50) } as unknown as HostTensor)
    expect(Array.from(f64.data)).toEqual([Math.fround(0.1), Math.fround(1 / 3), 0])
    const i64 = dec('I64', tensorOf([2 ** 31 - 1, -(2 ** 31), 7], [3], 'int32'))
    expect(i64.dtype).toBe('int32')
    expect(Array.from(i64.data)).toEqual([2 ** 31 - 1, -(2 ** 31), 7])
    const tooBig = decodeSafetensors(writeSafetensors({ 'mask': { t: { shape: [1], dtype: 'int32', data: Float64Array.of(2 ** 40) } as unknown as HostTensor, dtype: 'I64' } }))
    expect(E.isLeft(tooBig) && tooBig.left.where).toBe('safetensors[mask]')
    // releases of the reference before 1.31 stored `initted` as a float of shape [1]
    const q = orThrow(QUANTIZER_FACTORIES['VectorQuantize']!({ dim: 4, codebook_size: 8 }))
    const init = q.init(random.keyFromSeed(0))
    const old = orThrow(loadTorchStateDict(q, { ...init.state, '_codebook.initted': tensorOf([1], [1]) }))
    expect(old.state['_codebook.initted']).toEqual({ shape: [], dtype: 'bool', data: Uint8Array.of(1) })
    const notFlag = loadTorchStateDict(q, { ...init.state, '_codebook.initted': tensorOf([0.5], [1]) })
    expect(E.isLeft(notFlag) && notFlag.left.where).toBe('state-dict[_codebook.initted]')
  })

  it('a half-precision checkpoint (F16 or BF16 codebook) gives exactly the outputs of its float32 widening', async () => {
    const c = (await goldenCases()).find((k) => k.name === 'vq_euclidean')!
    const q = orThrow(QUANTIZER_FACTORIES['VectorQuantize']!(c.kwargs))
    const sd = torchStateOf(c, q)
    const x = c.runs[0]!.inputs['x']!.host
    for (const dtype of ['F16', 'BF16'] as const) {
      const entries: Record<string, FileEntry> = Object.fromEntries(
        Object.entries(sd).map(([k, { t }]) => [k, { t, dtype: t.dtype === 'bool' ? 'BOOL' : dtype }]),
      )
      const loaded = orThrow(fromSafetensors(writeSafetensors(entries, meta('VectorQuantize', c.kwargs))))
      // the widening, computed by the test's own encoder: the value of the rounded bits
      const widened = (t: HostTensor): HostTensor => {
        const dv = new DataView(new ArrayBuffer(4))
        const data = Float32Array.from(t.data, (v) => {
          if (dtype === 'BF16') return dv.setUint32(0, toBf16Bits(v) << 16), dv.getFloat32(0)
          const h = toHalfBits(v), e = (h >> 10) & 31, m = h & 1023, sgn = h & 0x8000 ? -1 : 1
          return e === 0 ? sgn * m * 2 ** -24 : sgn * (1 + m / 1024) * 2 ** (e - 15)
        })
        return { shape: t.shape, dtype: 'float32', data }
      }
      const embed = loaded.state['_codebook.embed']!
      expect(Array.from(embed.data), dtype).toEqual(Array.from(widened(sd['_codebook.embed']!.t).data))
      expect(embed.data.some((v, i) => v !== sd['_codebook.embed']!.t.data[i]), `${dtype} rounds the codebook`).toBe(true)
      const direct = Object.fromEntries(Object.entries(sd).map(([k, { t }]) => [k, t.dtype === 'float32' ? widened(t) : t]))
      const a = orThrow(await applyOnHost(loaded.quantizer, { params: loaded.params, state: loaded.state, x }, backend))
      const b = orThrow(await applyOnHost(q, { params: {}, state: direct, x }, backend))
      expect(Array.from(a.quantized.data)).toEqual(Array.from(b.quantized.data))
      expect(Array.from(a.indices.data)).toEqual(Array.from(b.indices.data))
    }
  })

  it('every half and bfloat16 bit pattern decodes to the value whose encoding it is', () => {
    const all = new Uint16Array(65536).map((_, i) => i)
    for (const dtype of ['F16', 'BF16'] as const) {
      const bytes = new Uint8Array(all.buffer.slice(0))
      const header = new TextEncoder().encode(JSON.stringify({ v: { dtype, shape: [65536], data_offsets: [0, bytes.length] } }))
      const file = new Uint8Array(8 + header.length + bytes.length)
      new DataView(file.buffer).setBigUint64(0, BigInt(header.length), true)
      file.set(header, 8)
      file.set(bytes, 8 + header.length)
      const v = orThrow(decodeSafetensors(file)).tensors['v']!.data
      const back = writeSafetensors({ v: { t: { shape: [65536], dtype: 'float32', data: v as Float32Array }, dtype } })
      const again = back.subarray(back.length - bytes.length)
      const wrong: number[] = []
      for (let i = 0; i < 65536; i++) {
        const exp = dtype === 'F16' ? (i >> 10) & 31 : (i >> 7) & 255
        const nan = dtype === 'F16' ? exp === 31 && (i & 1023) !== 0 : exp === 255 && (i & 127) !== 0
        if (nan ? !Number.isNaN(v[i]) : (again[2 * i]! | (again[2 * i + 1]! << 8)) !== i) wrong.push(i)
      }
      expect(wrong, dtype).toEqual([])
    }
  })

  const junk = fc.oneof(fc.anything(), fc.record({ shape: fc.anything(), dtype: fc.constantFrom('float32', 'int32', 'bool', 'F16', 7), data: fc.anything() }))
  test.prop([fc.dictionary(fc.constantFrom('layers.0._codebook.embed', 'layers.1._codebook.embed', 'layers.2._codebook.initted', 'layers.0._codebook.initted', '__proto__', 'constructor', 'x'), junk), fc.anything()], { numRuns: 200 })(
    'junk in: loadTorchStateDict and fromSafetensors return a Left or a load, never throw',
    (sd, bytes) => {
      const q = orThrow(QUANTIZER_FACTORIES['ResidualVQ']!({ dim: 4, codebook_size: 4, num_quantizers: 3, shared_codebook: true }))
      const r = loadTorchStateDict(q, sd as never)
      expect(E.isLeft(r) || Object.keys(r.right.state).length === 4).toBe(true)
      expect(() => loadTorchStateDict(q, bytes as never, bytes as never)).not.toThrow()
      expect(E.isLeft(fromSafetensors(bytes as never, sd as never))).toBe(true)
    },
  )

  it('fromSafetensors refuses a file that does not name its quantizer, bad kwargs, and a config the factory refuses', () => {
    const none = fromSafetensors(writeSafetensors({}))
    expect(E.isLeft(none) && none.left.where).toBe('safetensors.__metadata__')
    const notJson = fromSafetensors(writeSafetensors({}, { [META_CLASS]: 'FSQ', [META_KWARGS]: '{levels' }))
    expect(E.isLeft(notJson) && notJson.left.where).toBe('safetensors.__metadata__[tessera.kwargs]')
    const list = fromSafetensors(writeSafetensors({}, { [META_CLASS]: 'FSQ', [META_KWARGS]: '[1]' }))
    expect(E.isLeft(list) && list.left.message).toMatch(/JSON object/)
    const badCfg = fromSafetensors(writeSafetensors({}, meta('FSQ', { levels: [8, 5], no_such: 1 })))
    expect(E.isLeft(badCfg) && badCfg.left.message).toMatch(/no_such/)
    const proto = fromSafetensors(writeSafetensors({}, meta('constructor', {})))
    expect(E.isLeft(proto) && proto.left.message).toMatch(/class constructor is not in the library/)
    const fsq = orThrow(fromSafetensors(writeSafetensors({}, meta('FSQ', { levels: [8, 5, 5, 5] }))))
    expect(Object.keys(fsq.state).sort()).toEqual(['_basis', '_levels', 'implicit_codebook'])
    expect(fsq.metadata[META_CLASS]).toBe('FSQ')
  })
})
