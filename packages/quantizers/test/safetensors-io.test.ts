import { describe, expect, it } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import { random, tensorOf } from '@tessera/core'
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js'
import { joinStateDict, splitStateDict, stateDictFromJson, stateDictToJson } from '../src/io/state-dict.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { applyOnHost } from '../src/run.js'
import { arr, backends, manualSafetensors, orThrow, randn } from './helpers.js'

describe('safetensors', () => {
  test.prop([fc.array(fc.float({ noNaN: true }), { minLength: 0, maxLength: 20 }), fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { maxLength: 9 }), fc.array(fc.boolean(), { maxLength: 7 })], { numRuns: 60 })(
    'F32 / I32 / BOOL round-trip bit-exactly with metadata',
    (f, i, b) => {
      const sd = {
        'a.weight': tensorOf(f, [f.length]),
        'b.idx': tensorOf(i, [i.length], 'int32'),
        'c.flag': tensorOf(b.map(Number), [b.length], 'bool'),
        scalar: tensorOf([1.5], []),
      }
      const bytes = encodeSafetensors(sd, { format: 'pt' })
      const back = orThrow(decodeSafetensors(bytes))
      expect(back.metadata).toEqual({ format: 'pt' })
      for (const [k, v] of Object.entries(sd)) {
        expect(back.tensors[k]!.dtype).toBe(v.dtype)
        expect(back.tensors[k]!.shape).toEqual(v.shape)
        expect(Array.from(back.tensors[k]!.data)).toEqual(Array.from(v.data))
      }
      // data is 8-byte aligned after the header
      expect(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8).toBe(0)
    },
  )

  it('reads I64 (narrowed to int32) and refuses values that do not fit', () => {
    const d = new Uint8Array(16)
    const v = new DataView(d.buffer)
    v.setBigInt64(0, -5n, true)
    v.setBigInt64(8, 123456789n, true)
    const ok = orThrow(decodeSafetensors(manualSafetensors({ idx: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, d)))
    expect(ok.tensors['idx']!.dtype).toBe('int32')
    expect(Array.from(ok.tensors['idx']!.data)).toEqual([-5, 123456789])
    v.setBigInt64(8, 2n ** 40n, true)
    const bad = decodeSafetensors(manualSafetensors({ idx: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, d))
    expect(E.isLeft(bad) && bad.left.message).toMatch(/idx.*does not fit in int32/)
  })

  it.each([
    // F16 is read since PyTorch checkpoints use it; 8-bit floats are not
    [{ x: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } }, /F8_E4M3.*not supported/],
    [{ x: { dtype: 'F16', shape: [2], data_offsets: [0, 8] } }, /F16\[2\] needs 4/],
    [{ x: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, /needs 12/],
    [{ x: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, /outside/],
    [{ x: { dtype: 'F32', shape: [-1], data_offsets: [0, 0] } }, /non-negative/],
  ])('malformed headers are a Left naming the tensor: %j', (header, msg) => {
    const r = decodeSafetensors(manualSafetensors(header, new Uint8Array(8)))
    expect(E.isLeft(r) && r.left.message).toMatch(msg)
  })

  it('a truncated file is a Left', () => {
    expect(E.isLeft(decodeSafetensors(new Uint8Array(3)))).toBe(true)
    const b = encodeSafetensors({ a: tensorOf([1, 2], [2]) })
    expect(E.isLeft(decodeSafetensors(b.subarray(0, 12)))).toBe(true)
  })

  it('a quantizer state dict survives safetensors and golden JSON, and gives the same outputs', async () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6, codebook_dim: 3 }))
    const init = q.init(random.keyFromSeed(4))
    const flat = joinStateDict(init)
    expect(Object.keys(flat)).toContain('layers.1._codebook.embed')
    expect(Object.keys(flat)).toContain('project_in.weight')
    const viaST = orThrow(splitStateDict(q, orThrow(decodeSafetensors(encodeSafetensors(flat))).tensors))
    const viaJSON = orThrow(splitStateDict(q, orThrow(stateDictFromJson(JSON.parse(JSON.stringify(stateDictToJson(flat)))))))
    const x = randn([2, 3, 4], 5)
    const want = orThrow(await applyOnHost(q, { params: init.params, state: init.state, x }, backends[0]!))
    for (const loaded of [viaST, viaJSON]) {
      const got = orThrow(await applyOnHost(q, { params: loaded.params, state: loaded.state, x }, backends[0]!))
      expect(arr(got.quantized)).toEqual(arr(want.quantized))
      expect(arr(got.indices)).toEqual(arr(want.indices))
    }
  })

  it('splitStateDict refuses unknown names and wrong shapes, fills missing entries only from defaults', () => {
    const q = orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 6 }))
    const init = q.init(random.keyFromSeed(1))
    const flat = joinStateDict(init)
    const unknown = splitStateDict(q, { ...flat, 'layers.9.x': tensorOf([1], [1]) })
    expect(E.isLeft(unknown) && unknown.left.where).toBe('state-dict[layers.9.x]')
    expect(E.isRight(splitStateDict(q, { ...flat, codebooks: tensorOf([1], [1]) }, { ignore: ['codebooks'] }))).toBe(true)
    const badShape = splitStateDict(q, { ...flat, 'layers.0._codebook.embed': tensorOf([1, 2], [1, 2]) })
    expect(E.isLeft(badShape) && badShape.left.message).toMatch(/expects f32\[1,6,4\]|expects/)
    const { ['layers.0._codebook.embed_avg']: _drop, ...partial } = flat
    expect(E.isLeft(splitStateDict(q, partial))).toBe(true)
    expect(E.isRight(splitStateDict(q, partial, { defaults: init }))).toBe(true)
  })

  it('golden JSON tensors: int64 narrowed with a range check, bool, float32 exact', () => {
    const sd = orThrow(
      stateDictFromJson({
        a: { shape: [2], dtype: 'float32', data: [0.10000000149011612, -2] },
        b: { shape: [], dtype: 'bool', data: [true] },
        c: { shape: [2], dtype: 'int64', data: [3, -1] },
      }),
    )
    expect(sd['a']!.data[0]).toBe(Math.fround(0.1))
    expect(sd['b']!.data[0]).toBe(1)
    expect(sd['c']!.dtype).toBe('int32')
    const big = stateDictFromJson({ c: { shape: [1], dtype: 'int64', data: [2 ** 40] } })
    expect(E.isLeft(big) && big.left.message).toMatch(/does not fit in int32/)
  })
})
