import { describe, expect } from 'vitest'
import { fc, test } from '@fast-check/vitest'
import type { Tensor } from '@tessera/core'
import { tensorOf } from '@tessera/core'
import { atan, erf, erfinv, tan } from '../src/fsp/special.js'
import { arr, backends, orThrow, runOnHost } from './helpers.js'
import { erfHost, erfinvHost } from './special-host.js'

const run = async (backend: (typeof backends)[number], f: (t: Tensor) => Tensor, xs: number[]) =>
  arr(orThrow(await runOnHost(backend, [tensorOf(xs, [xs.length])] as const, (t) => f(t as Tensor))))

describe.each(backends.map((b) => [b.name, b] as const))('special functions for FSP on %s', (_name, backend) => {
  const f32 = fc.float({ noNaN: true, noDefaultInfinity: true })

  test.prop([fc.array(fc.double({ min: -8, max: 8, noNaN: true }), { minLength: 1, maxLength: 64 })], { numRuns: 30 })('erf within 3e-7 absolute', async (xs) => {
    const got = await run(backend, erf, xs)
    got.forEach((g, i) => expect(Math.abs(g - erfHost(Math.fround(xs[i]!)))).toBeLessThan(3e-7))
  })

  test.prop([fc.array(fc.double({ min: -0.999999, max: 0.999999, noNaN: true }), { minLength: 1, maxLength: 64 })], { numRuns: 30 })('erfinv within 2e-6 relative (float32 inputs near ±1 are coarse)', async (ys) => {
    const got = await run(backend, erfinv, ys)
    got.forEach((g, i) => {
      const want = erfinvHost(Math.fround(ys[i]!))
      expect(Math.abs(g - want)).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(want)))
    })
  })

  test.prop([fc.array(f32, { minLength: 1, maxLength: 64 })], { numRuns: 30 })('atan within 3e-7 absolute over every float32', async (xs) => {
    const got = await run(backend, atan, xs)
    got.forEach((g, i) => expect(Math.abs(g - Math.atan(Math.fround(xs[i]!)))).toBeLessThan(3e-7))
  })

  test.prop([fc.array(fc.double({ min: -1.5707, max: 1.5707, noNaN: true }), { minLength: 1, maxLength: 64 })], { numRuns: 30 })('tan within 1e-6 relative on (-pi/2, pi/2)', async (xs) => {
    const got = await run(backend, tan, xs)
    got.forEach((g, i) => {
      const want = Math.tan(Math.fround(xs[i]!))
      expect(Math.abs(g - want)).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(want)))
    })
  })
})
