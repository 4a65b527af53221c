import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import { random, tensorOf } from '@tessera/core'
import { decodeFSQ } from '../src/fsq/config.js'
import { makeFSQ } from '../src/fsq/fsq.js'
import { applyOnHost, compileCache } from '../src/run.js'
import { backends, orThrow, randn } from './helpers.js'

describe.each(backends.map((b) => [b.name, b] as const))('run helper on %s', (_name, backend) => {
  it('compiles once per program structure and backend, and reports bad inputs as a Left', async () => {
    const q = makeFSQ(orThrow(decodeFSQ({ levels: [8, 5, 5] })))
    const init = q.init(random.keyFromSeed(0))
    const cache = compileCache()
    const a = orThrow(await applyOnHost(q, { ...init, x: randn([2, 4, 3], 1) }, backend, cache))
    const b = orThrow(await applyOnHost(q, { ...init, x: randn([2, 4, 3], 2) }, backend, cache))
    expect(cache.size).toBe(1)
    expect(Array.from(a.indices.data)).not.toEqual(Array.from(b.indices.data))
    orThrow(await applyOnHost(q, { ...init, x: randn([1, 5, 3], 3) }, backend, cache))
    expect(cache.size).toBe(2)
    const missing = await applyOnHost(q, { params: {}, state: {}, x: randn([1, 5, 3], 3) }, backend, cache)
    expect(E.isLeft(missing) && missing.left.message).toMatch(/missing parameter\/state entries: _levels/)
    const wrongDtype = await applyOnHost(q, { ...init, x: tensorOf([1, 2, 3], [1, 1, 3], 'int32') }, backend, cache)
    expect(E.isLeft(wrongDtype)).toBe(true)
    cache.dispose()
    expect(cache.size).toBe(0)
  })
})
