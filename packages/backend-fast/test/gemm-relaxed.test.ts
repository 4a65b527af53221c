import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { describe, expect, test } from 'vitest'
import { fusedHere } from './fma-probe.js'
import type { GemmShape } from '../src/wasm/gemm.js'
import { gemmLayout, gemmSet } from '../src/wasm/gemm.js'
import { relaxedSimdSupported } from '../src/wasm/asm.js'

/*
 * The GEMM with relaxed SIMD's multiply-add (fastBackend's relaxedSimd). Node 20 has relaxed SIMD
 * only behind --experimental-wasm-relaxed-simd, so without it here the products run in a child
 * node with that flag, which returns them as JSON; every assertion is made here.
 */

interface Case {
  readonly shape: GemmShape
  readonly a: number[]
  readonly b: number[]
}

const lcg = (seed: number) => {
  let s = seed
  return () => Math.fround(((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 4 - 2)
}
const randomCase = (m: number, k: number, n: number, transA: boolean, transB: boolean, seed: number): Case => {
  const r = lcg(seed)
  return { shape: { m, k, n, transA, transB }, a: Array.from({ length: m * k }, r), b: Array.from({ length: k * n }, r) }
}
const cases: Case[] = [
  randomCase(64, 784, 128, false, true, 1),
  randomCase(37, 45, 29, true, false, 2),
  randomCase(5, 130, 13, true, true, 3),
  randomCase(9, 17, 8, false, false, 4),
  // -1 + (1 + 2^-12)^2: a fused multiply-add keeps the 2^-24 that a separate multiply rounds away
  { shape: { m: 1, k: 2, n: 1, transA: false, transB: false }, a: [1, 1 + 2 ** -12], b: [-1, 1 + 2 ** -12] },
]

const here = dirname(fileURLToPath(import.meta.url))
/** The child's script: every case on one thread and on two (split by panels), relaxed. */
const childScript = `
import { readFileSync } from 'node:fs'
const { gemmLayout, gemmSet } = await import(${JSON.stringify(pathToFileURL(join(here, '../src/wasm/gemm.ts')).href)})
const { relaxedSimdSupported } = await import(${JSON.stringify(pathToFileURL(join(here, '../src/wasm/asm.ts')).href)})
const cases = JSON.parse(readFileSync(0, 'utf8'))
const layouts = cases.map((c) => gemmLayout(c.shape))
const out = { supported: relaxedSimdSupported(), one: [], two: [] }
const one = gemmSet(layouts, { threads: 1, threadMinMacs: Infinity, relaxed: true })
const two = gemmSet(layouts, { threads: 2, threadMinMacs: 0, relaxed: true })
cases.forEach((c, i) => {
  const o1 = new Float32Array(c.shape.m * c.shape.n), o2 = new Float32Array(c.shape.m * c.shape.n)
  one.runners[i].run(Float32Array.from(c.a), Float32Array.from(c.b), o1, 1)
  two.runners[i].run(Float32Array.from(c.a), Float32Array.from(c.b), o2, 1)
  out.one.push(Array.from(o1))
  out.two.push(Array.from(o2))
})
await two.dispose()
// exit once the pipe has taken it all: exiting right after write() cut large outputs short
process.stdout.write(JSON.stringify(out), () => process.exit(0))
`

function relaxedProducts(): { one: number[][]; two: number[][] } {
  if (relaxedSimdSupported()) {
    const layouts = cases.map((c) => gemmLayout(c.shape))
    const one = gemmSet(layouts, { threads: 1, threadMinMacs: Infinity, relaxed: true })
    const run = (i: number) => {
      const c = cases[i]!
      const o = new Float32Array(c.shape.m * c.shape.n)
      one.runners[i]!.run(Float32Array.from(c.a), Float32Array.from(c.b), o, 1)
      return Array.from(o)
    }
    const r = cases.map((_, i) => run(i))
    return { one: r, two: r }
  }
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm')).href
  const r = spawnSync(
    process.execPath,
    ['--experimental-wasm-relaxed-simd', '--import', tsx, '--conditions=@tessera/source', '--input-type=module', '-e', childScript],
    { cwd: join(here, '..'), input: JSON.stringify(cases), encoding: 'utf8', maxBuffer: 1 << 26, timeout: 50_000 },
  )
  expect(r.status, r.stderr).toBe(0)
  const out = JSON.parse(r.stdout) as { supported: boolean; one: number[][]; two: number[][] }
  // the flag is present: the child must have compiled the relaxed kernel
  expect(out.supported).toBe(true)
  return out
}

/** Element (i, j) of the exact product (float64: each product of two float32 is exact) and the sum of |terms|. */
function exact(c: Case, i: number, j: number): { v: number; mag: number } {
  const { m, k, n, transA, transB } = c.shape
  let v = 0, mag = 0
  for (let t = 0; t < k; t++) {
    const p = c.a[transA ? t * m + i : i * k + t]! * c.b[transB ? j * k + t : t * n + j]!
    v += p
    mag += Math.abs(p)
  }
  return { v, mag }
}

describe('WebAssembly GEMM with relaxed SIMD multiply-adds', () => {
  test('within a k-term float32 sum of the exact product; two threads give the one-thread bits; it really fuses', () => {
    const { one, two } = relaxedProducts()
    cases.forEach((c, ci) => {
      const { m, k, n } = c.shape
      for (let i = 0; i < m; i++)
        for (let j = 0; j < n; j++) {
          const { v, mag } = exact(c, i, j)
          expect(Math.abs(one[ci]![i * n + j]! - v)).toBeLessThanOrEqual(k * 2 ** -23 * mag + 2 ** -149)
        }
      expect(two[ci]).toEqual(one[ci])
    })
    // the probe: separate multiply and add give 2^-11, a fused one the exact 2^-11 + 2^-24
    const probe = one[cases.length - 1]![0]!
    const plain = gemmSet([gemmLayout(cases[cases.length - 1]!.shape)], { threads: 1, threadMinMacs: Infinity })
    const o = new Float32Array(1)
    plain.runners[0]!.run(Float32Array.from(cases[cases.length - 1]!.a), Float32Array.from(cases[cases.length - 1]!.b), o, 1)
    expect(o[0]).toBe(2 ** -11)
    expect(probe).toBe(fusedHere() ? 2 ** -11 + 2 ** -24 : 2 ** -11)
  })
})
