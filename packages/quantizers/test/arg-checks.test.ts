import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { TesseraError } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js'
import { joinStateDict, splitStateDict } from '../src/io/state-dict.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { applyOnHost, indicesToCodesOnHost } from '../src/run.js'
import { manualSafetensors, orThrow, randn } from './helpers.js'

/** Issue 15, items 3, 4 and 7: every argument and every params/state entry is checked before tracing. */

const leftOf = <A>(r: E.Either<TesseraError, A>): TesseraError => {
  if (E.isRight(r)) throw new Error('expected a Left')
  return r.left
}
const backend = cpuBackend()
const q = orThrow(vectorQuantize({ dim: 4, codebook_size: 16 }))
const init = q.init(random.keyFromSeed(0))
const x = randn([2, 3, 4], 1)

describe('applyOnHost and indicesToCodesOnHost check state against the specs', () => {
  it('state from another config is a Left naming the entry and both avals', async () => {
    const other = orThrow(vectorQuantize({ dim: 4, codebook_size: 12 })).init(random.keyFromSeed(0))
    const e = leftOf(await applyOnHost(q, { params: init.params, state: other.state, x }, backend))
    expect(e.kind).toBe('input')
    expect(e.where).toBe('VectorQuantize.apply')
    expect(e.message).toContain('state entry _codebook.cluster_size is f32[1,12]; VectorQuantize expects f32[1,16]')
  })
  it('a float32 initted is refused', async () => {
    const state = { ...init.state, '_codebook.initted': tensorOf([1], []) }
    expect(leftOf(await applyOnHost(q, { params: init.params, state, x }, backend)).message).toContain('_codebook.initted is f32[]; VectorQuantize expects bool[]')
  })
  it('prototype names are unknown entries, never found on Object.prototype', async () => {
    for (const name of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      const state = { ...init.state }
      Object.defineProperty(state, name, { value: tensorOf([1], [1]), enumerable: true })
      expect(leftOf(await applyOnHost(q, { params: init.params, state, x }, backend)).message).toContain(`unknown entry "${name}"`)
      const sd = { ...joinStateDict(init) }
      Object.defineProperty(sd, name, { value: tensorOf([1], [1]), enumerable: true })
      expect(leftOf(splitStateDict(q, sd)).where).toBe(`state-dict[${name}]`)
    }
    // a missing entry is not found on the prototype either
    const { ['_codebook.embed']: _drop, ...partial } = joinStateDict(init)
    expect(leftOf(splitStateDict(q, Object.assign(Object.create({ '_codebook.embed': init.state['_codebook.embed'] }), partial))).message).toContain('missing')
  })
  it('a plain array, null or a mislabelled tensor where a tensor goes is a Left naming the argument', async () => {
    const cases: [unknown, string][] = [
      [{ ...init, x: [1, 2, 3] }, 'x must be a host tensor'],
      [{ ...init, x: null }, 'x must be a host tensor { shape, dtype, data } (tensorOf / hostTensor), got null'],
      [{ ...init, x: tensorOf([1, 2], [2], 'int32') }, 'x must be float32'],
      [{ ...init, x, key: [1, 2] }, 'key must be a host tensor'],
      [{ ...init, x, key: tensorOf([1, 2, 3], [3], 'int32') }, 'key is i32[3]; a random key expects i32[2]'],
      [{ ...init, state: null, x }, 'state must be a plain object of named host tensors, got null'],
      [{ ...init, x, training: 'yes' }, 'training must be a boolean'],
      [{ ...init, x, nonFinite: 'ignore' }, 'nonFinite must be one of error, skip-update, propagate'],
      [{ ...init, x, trainig: true }, 'unknown field "trainig"'],
      [{ ...init, state: { ...init.state, '_codebook.embed': { shape: [1, 16, 4], dtype: 'float32', data: new Float64Array(64) } }, x }, 'state entry _codebook.embed has Float64Array data for dtype float32'],
      [null, 'args must be'],
    ]
    for (const [args, msg] of cases) expect(leftOf(await applyOnHost(q, args as never, backend)).message).toContain(msg)
    expect(leftOf(await applyOnHost(q, { ...init, x }, null as never)).message).toContain('backend must be a Backend')
    expect(leftOf(await applyOnHost(null as never, { ...init, x }, backend)).message).toContain('q must be a quantizer')
  })
  it('indicesToCodesOnHost checks params, state and indices', async () => {
    const idx = tensorOf([0, 1, 2], [3], 'int32')
    expect(E.isRight(await indicesToCodesOnHost(q, init.params, idx, backend, undefined, init.state))).toBe(true)
    expect(leftOf(await indicesToCodesOnHost(q, init.params, tensorOf([0], [1]), backend, undefined, init.state)).message).toContain('indices must be int32')
    expect(leftOf(await indicesToCodesOnHost(q, init.params, [0] as never, backend)).message).toContain('indices must be a host tensor')
    expect(leftOf(await indicesToCodesOnHost(q, init.params, idx, backend, undefined, { toString: idx } as never)).message).toContain('unknown entry "toString"')
  })
})

describe('safetensors byte ranges', () => {
  it.each([
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, 12, /b\].*overlap/],
    [{ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, 12, /b\].*gap of 4 bytes/],
    [{ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }, 8, /cover 4 of the 8 data bytes/],
    [{ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4, /outside/],
  ] as const)('overlaps, gaps and ranges past the end are Lefts: %j', (header, bytes, msg) => {
    expect(leftOf(decodeSafetensors(manualSafetensors(header, new Uint8Array(bytes)))).message).toMatch(msg)
  })
  it('a tensor named __proto__ is an own entry, and encoding runs without Buffer', () => {
    const saved = (globalThis as { Buffer?: unknown }).Buffer
    ;(globalThis as { Buffer?: unknown }).Buffer = undefined
    try {
      const sd: Record<string, ReturnType<typeof tensorOf>> = {}
      Object.defineProperty(sd, '__proto__', { value: tensorOf([1.5], [1]), enumerable: true })
      sd['é'] = tensorOf([2], [1])
      const back = orThrow(decodeSafetensors(encodeSafetensors(sd, { note: 'ü' })))
      expect(Object.hasOwn(back.tensors, '__proto__')).toBe(true)
      expect(Object.getPrototypeOf(back.tensors)).toBe(Object.prototype)
      expect(back.tensors['é']!.data[0]).toBe(2)
    } finally {
      ;(globalThis as { Buffer?: unknown }).Buffer = saved
    }
  })
})
