import { random, tensorOf } from '@tessera/core'
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import { decodeLatentQuantize, latentValues, makeLatentQuantize } from '../src/latent/latent.js'
import { applyQ, arr, backends, orThrow } from './helpers.js'

interface Case {
  levels: number[]
  x_shape: number[]
  x: number[]
  codes: number[]
  indices: number[]
  codes_off_grid: number
}
// torch's codes and indices for inputs whose straight-through sums miss the value grid (scripts/latent-straight-through.py)
const file = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'latent-straight-through.json')
const { cases, values } = JSON.parse(readFileSync(file, 'utf8')) as { cases: Case[]; values: Record<string, number[]> }

test("value grids are torch's float32 linspace (odd L, its middle value -1.49e-8 for L = 7) and arange(L)/L - 0.5 (even L)", () => {
  expect(Object.keys(values).length).toBe(15)
  for (const [L, want] of Object.entries(values)) expect(latentValues(Number(L))).toEqual(want.map(Math.fround))
})

describe.each(backends.map((b) => [b.name, b] as const))('LatentQuantize against torch on %s', (_name, backend) => {
  test('the fixture has codes off the grid to check', () => {
    expect(cases.reduce((n, c) => n + c.codes_off_grid, 0)).toBeGreaterThan(0)
  })

  test.each(cases.map((c) => [c.levels.join(','), c] as const))('levels [%s]: codes z + (v - z) and truncated indices, bit for bit', async (_l, c) => {
    const q = makeLatentQuantize(orThrow(decodeLatentQuantize({ levels: c.levels, dim: c.levels.length })))
    const init = q.init(random.keyFromSeed(0))
    const r = await applyQ(backend, q, init, tensorOf(c.x, c.x_shape))
    expect(arr(r.extra['codes']!)).toEqual(c.codes.map(Math.fround))
    expect(arr(r.indices)).toEqual(c.indices)
  })
})
