import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random } from '@tessera/core'
import { garbageLike } from '@tessera/core/testing'
import { cpuBackend } from '@tessera/backend-cpu'
import { applyOnHost, runOnHost } from '../src/run.js'
import type { HostApplyResult } from '../src/run.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { arraysOf, orThrow, plainValues, randn } from './helpers.js'
import { describeLanes } from './lanes.js'
import { keyFor, nodeLanes, xFor, zoo } from './zoo.js'

/**
 * applyOnHost's `into` (and runOnHost's): results written into the arrays of an earlier result,
 * for loops that allocate nothing per step. Values must be those of a call with fresh arrays.
 */

/** A result of the same form, every array a fresh one filled with NaN (or 77 for integers). */
const garbageResult = (r: HostApplyResult): HostApplyResult => {
  const g = (rec: Record<string, HostTensor>) => Object.fromEntries(Object.entries(rec).map(([k, t]) => [k, garbageLike(t)]))
  return {
    quantized: garbageLike(r.quantized), indices: garbageLike(r.indices), loss: garbageLike(r.loss),
    losses: g(r.losses), state: g(r.state), extra: g(r.extra), ...(r.updatedParams ? { updatedParams: g(r.updatedParams) } : {}),
  }
}

describeLanes('apply-into', nodeLanes, (lane) => `applyOnHost into: ${lane.name}`, (backend) => {
  for (const e of zoo)
    for (const training of [false, true])
      it(`${e.name} ${training ? 'training' : 'eval'}: the values of a fresh call, in the arrays given`, async () => {
        const init = e.q.init(random.keyFromSeed(3))
        const args = { params: init.params, state: init.state, x: xFor(e), key: keyFor(5), training, nonFinite: 'propagate' as const }
        const fresh = await applyOnHost(e.q, args, backend)
        if (E.isLeft(fresh)) throw fresh.left
        const into = garbageResult(fresh.right)
        const given = arraysOf(into)
        const r = await applyOnHost(e.q, { ...args, into }, backend)
        if (E.isLeft(r)) throw r.left
        const got = arraysOf(r.right)
        expect(plainValues(got)).toEqual(plainValues(arraysOf(fresh.right)))
        for (const [path, t] of Object.entries(got)) expect(t.data, path).toBe(given[path]!.data)
      })
})

describe('applyOnHost into: a training loop over two results', () => {
  const q = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, decay: 0.8, kmeans_init: false }))
  const x = randn([2, 6, 4], 11)
  it('alternating two results gives the state of a loop with fresh arrays, and allocates no result array', async () => {
    const backend = cpuBackend()
    const init = q.init(random.keyFromSeed(1))
    const step = (state: Record<string, HostTensor>, into?: HostApplyResult) =>
      applyOnHost(q, { params: init.params, state, x, training: true, key: keyFor(2), ...(into ? { into } : {}) }, backend)
    let freshState = init.state
    for (let i = 0; i < 4; i++) freshState = E.getOrElseW((e: Error) => { throw e })(await step(freshState)).state
    const a = E.getOrElseW((e: Error) => { throw e })(await step(init.state))
    let b = garbageResult(a)
    const owned = new Set([...Object.values(arraysOf(a)), ...Object.values(arraysOf(b))].map((t) => t.data))
    let last = a
    for (let i = 1; i < 4; i++) {
      const r = await step(last.state, b)
      if (E.isLeft(r)) throw r.left
      for (const t of Object.values(arraysOf(r.right))) expect(owned.has(t.data)).toBe(true)
      b = last
      last = r.right
    }
    expect(plainValues(last.state)).toEqual(plainValues(freshState))
  })
})

describe('applyOnHost into: errors name the entry', () => {
  const q = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, decay: 0.8, kmeans_init: false }))
  const x = randn([2, 3, 4], 4)
  const backend = cpuBackend()
  const init = q.init(random.keyFromSeed(1))
  const args = { params: init.params, state: init.state, x }
  const first = async () => {
    const r = await applyOnHost(q, args, backend)
    if (E.isLeft(r)) throw r.left
    return r.right
  }
  const left = async (into: unknown, pattern: RegExp) => {
    const r = await applyOnHost(q, { ...args, into: into as HostApplyResult }, backend)
    expect(E.isLeft(r) && r.left.message).toMatch(pattern)
  }
  const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) })

  it('an entry of the wrong shape or dtype', async () => {
    await left({ quantized: f32([2, 3, 5]) }, /into\.quantized is f32\[2,3,5\]; that output is f32\[2,3,4\]/)
    await left({ indices: f32([2, 3]) }, /into\.indices is f32\[2,3\]; that output is i32\[2,3\]/)
  })
  it('an entry over an argument the call reads', async () => {
    const r = await first()
    const name = Object.keys(r.state)[0]!
    await left({ state: { [name]: init.state[name] } }, /into\.state\S* shares memory with state\S*: an output may not be written over an input/)
    await left({ quantized: { ...x } }, /into\.quantized shares memory with x/)
  })
  it('an entry the call has no output for, or a form that is not the result', async () => {
    await left({ bogus: f32([1]) }, /into\.bogus has no counterpart \(entries here: .*"quantized"/)
    await left({ state: { 'no.such.entry': f32([1]) } }, /into\.state\["no\.such\.entry"\] has no counterpart/)
    await left(new Float32Array(3), /into must be a plain object with entries/)
    await left({ losses: [] }, /into\.losses must be a plain object/)
    await left({ quantized: [1, 2] }, /into\.quantized/)
  })
  it('a result with its nonFinite message is taken, and a partial one leaves the rest fresh', async () => {
    const r = await first()
    const into = { ...garbageResult(r), nonFinite: 'the input x has a NaN at [0, 0, 0]' }
    const a = await applyOnHost(q, { ...args, into }, backend)
    if (E.isLeft(a)) throw a.left
    expect(a.right.quantized.data).toBe(into.quantized.data)
    expect(Array.from(a.right.quantized.data)).toEqual(Array.from(r.quantized.data))
    const only = f32([2, 3, 4])
    const b = await applyOnHost(q, { ...args, into: { quantized: only } }, backend)
    if (E.isLeft(b)) throw b.left
    expect(b.right.quantized.data).toBe(only.data)
    expect(b.right.indices.data).not.toBe(r.indices.data)
    expect(Array.from(b.right.indices.data)).toEqual(Array.from(r.indices.data))
  })
})

describe('runOnHost into', () => {
  it('names entries by their path in the result and arguments by argNames', async () => {
    const backend = cpuBackend()
    const x = randn([3], 1)
    const out = { y: { shape: [3], dtype: 'float32' as const, data: new Float32Array(3) } }
    const r = await runOnHost(backend, [{ x }] as const, (a) => ({ y: a.x.add(1) }), undefined, { into: out })
    if (E.isLeft(r)) throw r.left
    expect(r.right.y.data).toBe(out.y.data)
    expect(Array.from(r.right.y.data)).toEqual(Array.from(x.data).map((v) => Math.fround(v + 1)))
    const bad = await runOnHost(backend, [{ x }] as const, (a) => ({ y: a.x.add(1) }), undefined, { into: { y: x }, argNames: ['inputs'] })
    expect(E.isLeft(bad) && bad.left.message).toMatch(/into\.y shares memory with inputs\.x/)
    const t = out.y
    const twice = await runOnHost(backend, [{ x }] as const, (a) => ({ y: a.x.add(1), z: a.x.mul(2) }), undefined, { into: { y: t, z: t } })
    expect(E.isLeft(twice) && twice.left.message).toMatch(/into\.z shares memory with into\.y/)
  })
})
