import { describe, expect, it } from 'vitest'
import { fc } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { TesseraError, checkHostTensor, hostTensor, random } from '@tessera/core'
import { decodeSafetensors, encodeSafetensors } from '../src/io/safetensors.js'
import { joinStateDict, splitStateDict, stateDictFromJson } from '../src/io/state-dict.js'
import { fsq } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { simVQ } from '../src/simvq/simvq.js'
import { applyOnHost, indicesToCodesOnHost } from '../src/run.js'
import { keyFor, nodeLanes, xFor, zoo } from './zoo.js'

/**
 * Issue 15, item 8: the hostile-input suite. Arbitrary values (wrong types, shapes and dtypes,
 * non-finite numbers, prototype-named keys) go into every public entry point; each call must return
 * a Left (a TesseraError) or a valid result, and never throw, hang (vitest's timeout), return NaN
 * the finite-input policy should have refused, or change an input. The quantizer calls run on every
 * backend available in Node; run counts are modest so the suite stays within a few seconds per backend.
 */

const PROTO_NAMES = ['constructor', 'toString', '__proto__', 'hasOwnProperty', 'valueOf']
const weird = fc.constantFrom(NaN, Infinity, -Infinity, -0, -1, 1.5, 2 ** 31, 2 ** 40, 1e30, -1e30, Number.MAX_VALUE, 0)

/** A record that has a prototype-named own key (defineProperty: `{ __proto__: v }` would set the prototype). */
const withKey = (base: object, name: string, v: unknown): Record<string, unknown> => {
  const out: Record<string, unknown> = { ...base }
  Object.defineProperty(out, name, { value: v, enumerable: true, configurable: true, writable: true })
  return out
}

const typedArb: fc.Arbitrary<ArrayBufferView> = fc
  .tuple(fc.constantFrom('f32', 'f64', 'i32', 'i16', 'u8', 'u32'), fc.array(fc.oneof(fc.integer({ min: -300, max: 300 }), weird), { maxLength: 8 }))
  .map(([k, v]) =>
    k === 'f32' ? Float32Array.from(v) : k === 'f64' ? Float64Array.from(v) : k === 'i32' ? Int32Array.from(v) : k === 'i16' ? Int16Array.from(v) : k === 'u8' ? Uint8Array.from(v) : Uint32Array.from(v),
  )

/** Things that look somewhat like a host tensor: valid ones of the wrong aval, mislabelled ones, broken ones. */
const tensorish: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({
    shape: fc.array(fc.oneof(fc.integer({ min: 0, max: 4 }), weird), { maxLength: 3 }),
    dtype: fc.constantFrom('float32', 'int32', 'bool', 'float64', 'int64', 7),
    data: fc.oneof(typedArb, fc.array(weird, { maxLength: 4 }), fc.constant(null)),
  }),
  fc.tuple(fc.array(fc.integer({ min: 1, max: 4 }), { maxLength: 3 }), fc.constantFrom('float32' as const, 'int32' as const, 'bool' as const), weird).map(([shape, dtype, v]) => {
    const n = shape.reduce((a, b) => a * b, 1)
    const r = hostTensor(Array.from({ length: n }, (_, i) => (dtype === 'float32' ? (i === 0 ? v : i) : dtype === 'bool' ? i % 2 : i)), shape, dtype)
    return E.isRight(r) ? r.right : null
  }),
)

const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, undefined, true, 'x', '', [], {}, () => 1),
  weird,
  typedArb,
  fc.array(weird, { maxLength: 4 }),
  fc.constantFrom(...PROTO_NAMES).map((k) => withKey({}, k, 1)),
  tensorish,
)

/** Deep copies of every typed array reachable from a value, to prove nothing was written. */
function typedArrays(v: unknown, seen = new Set<unknown>()): ArrayBufferView[] {
  if (typeof v !== 'object' || v === null || seen.has(v)) return []
  seen.add(v)
  if (ArrayBuffer.isView(v)) return [v]
  return Object.values(v).flatMap((x) => typedArrays(x, seen))
}
const bytesOf = (a: ArrayBufferView) => Array.from(new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
const fingerprint = (v: unknown) => typedArrays(v).map(bytesOf)

/** Call and check the outcome is an Either (a Left holding a TesseraError), with inputs unchanged. */
async function hostile<A>(args: unknown, call: () => Promise<E.Either<TesseraError, A>> | E.Either<TesseraError, A>): Promise<E.Either<TesseraError, A>> {
  const before = fingerprint(args)
  const r = await call()
  expect(E.isLeft(r) || E.isRight(r)).toBe(true)
  if (E.isLeft(r)) expect(r.left).toBeInstanceOf(TesseraError)
  expect(fingerprint(args)).toEqual(before)
  return r
}

const finiteAll = (t: HostTensor) => t.dtype !== 'float32' || Array.from(t.data).every(Number.isFinite)

/** One mutation of valid apply arguments. */
type Names = { readonly params: readonly string[]; readonly state: readonly string[] }
type Mutation = (a: Record<string, unknown>, names: Names) => Record<string, unknown>
const mutation: fc.Arbitrary<Mutation> =
  fc.oneof(
    fc.constant<Mutation>((a) => a),
    junk.map<Mutation>((j) => (a) => ({ ...a, x: j })),
    fc.tuple(fc.nat(), weird).map<Mutation>(([i, v]) => (a) => {
      const x = a['x'] as HostTensor
      const d = x.data.slice() as Float32Array
      d[i % d.length] = v
      return { ...a, x: { ...x, data: d } }
    }),
    fc.tuple(fc.constantFrom('params', 'state'), fc.nat(), junk).map<Mutation>(([rec, i, j]) => (a, names) => {
      const keys = names[rec as 'params' | 'state']
      if (keys.length === 0) return { ...a, [rec]: j }
      return { ...a, [rec]: { ...(a[rec] as object), [keys[i % keys.length]!]: j } }
    }),
    fc.tuple(fc.constantFrom('params', 'state'), fc.constantFrom(...PROTO_NAMES), junk).map<Mutation>(([rec, k, j]) => (a) => ({ ...a, [rec]: withKey(a[rec] as object, k, j) })),
    fc.tuple(fc.constantFrom('params', 'state'), fc.nat()).map<Mutation>(([rec, i]) => (a) => {
      const r = { ...(a[rec] as Record<string, unknown>) }
      const keys = Object.keys(r)
      if (keys.length > 0) delete r[keys[i % keys.length]!]
      return { ...a, [rec]: r }
    }),
    fc.tuple(fc.constantFrom('training', 'key', 'nonFinite', 'params', 'state', 'bogus'), junk).map<Mutation>(([k, j]) => (a) => ({ ...a, [k]: j })),
    fc.constantFrom('error', 'skip-update', 'propagate').map<Mutation>((p) => (a) => ({ ...a, nonFinite: p })),
  )

async function applyProperty(backend: Backend, numRuns: number) {
  const entries = zoo
  const inits = entries.map((e) => e.q.init(random.keyFromSeed(4)))
  const seen = { left: 0, right: 0 }
  await fc.assert(
    fc.asyncProperty(fc.nat({ max: entries.length - 1 }), fc.boolean(), fc.array(mutation, { maxLength: 2 }), junk, async (qi, training, muts, junkIdx) => {
      const e = entries[qi]!
      const init = inits[qi]!
      const names: Names = { params: Object.keys(init.params), state: Object.keys(init.state) }
      let args: Record<string, unknown> = { params: init.params, state: init.state, x: xFor(e), key: keyFor(1), training }
      for (const m of muts) args = m(args, names)
      const r = await hostile(args, () => applyOnHost(e.q, args as never, backend))
      seen[E.isLeft(r) ? 'left' : 'right']++
      if (E.isRight(r)) {
        for (const t of [r.right.quantized, r.right.indices, r.right.loss, ...Object.values(r.right.state)]) expect(E.isRight(checkHostTensor(t, 'out', 'test'))).toBe(true)
        const policy = (args['nonFinite'] as string | undefined) ?? (args['training'] === true ? 'error' : 'propagate')
        if (policy === 'error') {
          // the policy let it through: then x, the loss and every float32 state entry are finite
          expect(finiteAll(args['x'] as HostTensor)).toBe(true)
          expect([r.right.loss, ...Object.values(r.right.losses), ...Object.values(r.right.state)].every(finiteAll)).toBe(true)
        }
        const codes = await hostile([init.params, r.right.indices, args['state']], () => indicesToCodesOnHost(e.q, init.params, r.right.indices, backend, undefined, init.state))
        expect(E.isRight(codes)).toBe(true)
      }
      await hostile(junkIdx, () => indicesToCodesOnHost(e.q, init.params, junkIdx as never, backend, undefined, init.state))
    }),
    { numRuns, seed: 15 },
  )
  // a fuzz that only ever sees Lefts proves nothing about valid results
  expect(seen.right).toBeGreaterThan(numRuns / 10)
  expect(seen.left).toBeGreaterThan(numRuns / 10)
}

for (const lane of nodeLanes) {
  describe(`hostile input: ${lane.name}`, async () => {
    const made = await lane.make()
    if ('skip' in made) {
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      return
    }
    it('applyOnHost and indicesToCodesOnHost return a Left or a valid result, never throw or mutate', async () => {
      await applyProperty(made, lane.name === 'cpu' ? 120 : 40)
    })
  })
}

describe('hostile input: host-side entry points', () => {
  it('hostTensor never throws, wraps or mislabels', () => {
    fc.assert(
      fc.property(fc.oneof(typedArb, fc.array(fc.oneof(weird, fc.integer()), { maxLength: 6 }), junk), fc.oneof(fc.array(fc.oneof(fc.integer({ min: -1, max: 6 }), weird), { maxLength: 3 }), junk), fc.constantFrom(undefined, 'float32', 'int32', 'bool', 'float64'), (data, shape, dtype) => {
        const before = fingerprint([data, shape])
        const r = hostTensor(data as never, shape as never, dtype as never)
        expect(fingerprint([data, shape])).toEqual(before)
        if (E.isLeft(r)) return
        expect(E.isRight(checkHostTensor(r.right, 't', 'test'))).toBe(true)
        // the values are the caller's, as the dtype stores them: never wrapped, truncated or relabelled
        const src = Array.from(data as ArrayLike<number>, Number)
        const want = r.right.dtype === 'float32' ? src.map(Math.fround) : src
        expect(Array.from(r.right.data)).toEqual(want)
      }),
      { numRuns: 400, seed: 15 },
    )
  })

  const factories = { fsq, lfq, vectorQuantize, residualFSQ, residualVQ, simVQ }
  it('factories return a Left or a quantizer for arbitrary options', () => {
    const value = fc.oneof(junk, fc.integer({ min: 1, max: 8 }), fc.array(fc.integer({ min: 2, max: 6 }), { maxLength: 3 }), fc.boolean())
    const opts = fc.dictionary(fc.constantFrom('dim', 'levels', 'codebook_size', 'num_quantizers', 'decay', 'kmeans_iters', 'soft_clamp_input_value', 'codebook_diversity_temperature', 'reset_cluster_size', ...PROTO_NAMES), value, { maxKeys: 4 })
    fc.assert(
      fc.property(fc.constantFrom(...Object.keys(factories)), opts, (name, o) => {
        const r = factories[name as keyof typeof factories](o)
        if (E.isLeft(r)) {
          expect(r.left).toBeInstanceOf(TesseraError)
          expect(r.left.kind).toBe('config')
        } else expect(typeof r.right.apply).toBe('function')
      }),
      { numRuns: 400, seed: 15 },
    )
  })

  it('splitStateDict, stateDictFromJson and decodeSafetensors return a Left or valid tensors', () => {
    const q = zoo.find((z) => z.name === 'ResidualVQ')!.q
    const flat = joinStateDict(q.init(random.keyFromSeed(0)))
    const names = Object.keys(flat)
    fc.assert(
      fc.property(fc.oneof(fc.constantFrom(...names), fc.constantFrom(...PROTO_NAMES)), junk, fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.integer({ min: 0, max: 255 }), (name, j, bytes, at, b) => {
        const sd = withKey(flat, name, j)
        const before = fingerprint(sd)
        const split = splitStateDict(q, sd as never)
        expect(fingerprint(sd)).toEqual(before)
        if (E.isRight(split))
          for (const [k, t] of Object.entries({ ...split.right.params, ...split.right.state })) {
            expect(Object.hasOwn(q.paramSpecs, k) || Object.hasOwn(q.stateSpecs, k)).toBe(true)
            expect(E.isRight(checkHostTensor(t, k, 'test'))).toBe(true)
          }
        const json = stateDictFromJson(withKey({}, name, j))
        expect(E.isLeft(json) || E.isRight(json)).toBe(true)
        // encoding returns bytes: a bad state dict throws a TesseraError naming the entry, never a TypeError
        try {
          decodeSafetensors(encodeSafetensors(sd as never))
        } catch (err) {
          expect(err).toBeInstanceOf(TesseraError)
        }
        // a valid file with one byte changed, and arbitrary bytes
        const file = encodeSafetensors({ a: flat[names[0]!]!, b: flat[names[1]!]! })
        file[at % file.length] = b
        for (const f of [file, bytes]) {
          const d = decodeSafetensors(f)
          if (E.isRight(d)) for (const t of Object.values(d.right.tensors)) expect(E.isRight(checkHostTensor(t, 't', 'test'))).toBe(true)
        }
      }),
      { numRuns: 300, seed: 15 },
    )
  })
})
