import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect, test } from 'vitest'
import { fusedHere } from './fma-probe.js'
import { fastBackend, planProgram } from '../src/index.js'
import { relaxedSimdSupported } from '../src/wasm/asm.js'
import { childRunWithWorkers, runWithWorkers } from './loop-helpers.js'

/*
 * The nearest-code kernel with and without relaxed SIMD's fused multiply-add. Node 20 has relaxed
 * SIMD only behind --experimental-wasm-relaxed-simd, so when this process lacks it the relaxed
 * cases run in a child node with that flag, which returns its indices as JSON; every assertion
 * is made here.
 */

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

interface Case {
  readonly name: string
  readonly program: 'dist' | 'negdot'
  readonly threads: number
  readonly x: { shape: [number, number]; data: number[] }
  readonly c: { shape: [number, number]; data: number[] }
}

function program(kind: Case['program'], [n, d]: [number, number], [k]: [number, number]): Program {
  return traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => {
    if (kind === 'negdot') return [x.matmul(cb.mT).neg().argmin(-1)]
    const dist = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1))
    return [dist.argmin(-1)]
  }).program
}

function lcg(seed: number) {
  let s = seed
  return () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648
}
const gridData = (len: number, seed: number) => {
  const r = lcg(seed)
  return Array.from({ length: len }, () => Math.floor(r() * 33 - 16) / 8)
}
const floatData = (len: number, seed: number) => {
  const r = lcg(seed)
  return Array.from({ length: len }, () => Math.fround(r() * 2 - 1))
}

const t = (shape: [number, number], data: number[]) => ({ shape, data })
const cases: Case[] = [
  // grid values: every product and partial sum is exact in float32, fused or not
  ...[[37, 5, 29], [1, 3, 1], [12, 9, 33], [301, 16, 17]].map(([n, d, k], i): Case => ({
    name: `grid ${n}x${d} vs ${k}`, program: 'dist', threads: 1, x: t([n!, d!], gridData(n! * d!, 7 + i)), c: t([k!, d!], gridData(k! * d!, 70 + i)),
  })),
  // many chunks handed to a worker (the work is over the threading threshold)
  { name: 'grid, 2 threads', program: 'dist', threads: 2, x: t([20000, 8], gridData(160000, 3)), c: t([40, 8], gridData(320, 4)) },
  { name: 'floats, 2 threads', program: 'dist', threads: 2, x: t([9000, 24], floatData(216000, 5)), c: t([77, 24], floatData(1848, 6)) },
  { name: 'floats, 3 threads', program: 'dist', threads: 3, x: t([9000, 24], floatData(216000, 5)), c: t([77, 24], floatData(1848, 6)) },
  { name: 'floats, 1 thread', program: 'dist', threads: 1, x: t([9000, 24], floatData(216000, 5)), c: t([77, 24], floatData(1848, 6)) },
  {
    name: 'NaN', program: 'negdot', threads: 1, x: t([3, 2], [1, 2, 0, 0, -1, 3]),
    c: t([20, 2], Array.from({ length: 40 }, (_, i) => (i === 34 || i === 11 ? NaN : (i % 7) - 3))),
  },
  // x . c1 = -1 + (1 + 2^-12)^2: a fused multiply-add keeps the 2^-24 that a separate multiply
  // rounds away, so code 1 beats code 0 (x . c0 = 2^-11) only on the fused path (and in the reference)
  { name: 'fma probe', program: 'negdot', threads: 1, x: t([1, 2], [1, 1 + 2 ** -12]), c: t([2, 2], [2 ** -11, 0, -1, 1 + 2 ** -12]) },
]

const inputs = (c: Case): HostTensor[] => [tensorOf(c.x.data, c.x.shape), tensorOf(c.c.data, c.c.shape)]
const reference = (c: Case) => Array.from(interpretProgram(program(c.program, c.x.shape, c.c.shape), inputs(c))[0]!.data)

/** Rows whose index differs from the reference must be near-ties: float64 distances within float32 error of a k-term sum. */
function nearTiesOnly(c: Case, got: number[], want: number[]): number {
  const [n, d] = c.x.shape
  const dist = (i: number, j: number) => {
    let s = 0
    for (let q = 0; q < d; q++) s += (c.x.data[i * d + q]! - c.c.data[j * d + q]!) ** 2
    return s
  }
  let diffs = 0
  for (let i = 0; i < n; i++) {
    if (got[i] === want[i]) continue
    diffs++
    expect(Math.abs(dist(i, got[i]!) - dist(i, want[i]!))).toBeLessThan(d * 4 * 2 ** -23)
  }
  return diffs
}

async function runHere(c: Case, relaxedSimd: boolean): Promise<number[]> {
  const p = program(c.program, c.x.shape, c.c.shape)
  return Array.from((await runWithWorkers(fastBackend({ threads: c.threads, relaxedSimd }).compile(p), inputs(c), c.threads))[0]!.data)
}

const here = dirname(fileURLToPath(import.meta.url))
/** The child's script: runs every case on fastBackend() (relaxedSimd 'auto') and prints the indices. */
const childScript = `
import { readFileSync } from 'node:fs'
import { traceOrThrow, tensorOf } from '@tessera/core'
const { fastBackend } = await import(${JSON.stringify(pathToFileURL(join(here, '../src/index.ts')).href)})
const { relaxedSimdSupported } = await import(${JSON.stringify(pathToFileURL(join(here, '../src/wasm/asm.ts')).href)})
${childRunWithWorkers}
const f32 = (shape) => ({ shape, dtype: 'float32' })
const cases = JSON.parse(readFileSync(0, 'utf8'), (k, v) => (v === 'NaN' ? NaN : v))
const out = { supported: relaxedSimdSupported(), names: [], indices: [] }
for (const c of cases) {
  const [n, d] = c.x.shape, [k] = c.c.shape
  const p = traceOrThrow([f32([n, d]), f32([k, d])], (x, cb) => {
    if (c.program === 'negdot') return [x.matmul(cb.mT).neg().argmin(-1)]
    return [x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1)]
  }).program
  const b = fastBackend({ threads: c.threads })
  out.names.push(b.name)
  out.indices.push(Array.from((await runWithWorkers(b.compile(p), [tensorOf(c.x.data, c.x.shape), tensorOf(c.c.data, c.c.shape)], c.threads))[0].data))
}
// exit once the pipe has taken it all: exiting right after write() cut large outputs short
process.stdout.write(JSON.stringify(out), () => process.exit(0))
`

/** Indices from the relaxed path: in this process when it has relaxed SIMD, else in a child with the flag. */
async function relaxedIndices(): Promise<{ names: string[]; indices: number[][] }> {
  if (relaxedSimdSupported()) {
    const indices = await Promise.all(cases.map((c) => runHere(c, true)))
    return { names: cases.map((c) => fastBackend({ threads: c.threads }).name), indices }
  }
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm')).href
  const r = spawnSync(
    process.execPath,
    ['--experimental-wasm-relaxed-simd', '--import', tsx, '--conditions=@tessera/source', '--input-type=module', '-e', childScript],
    { cwd: join(here, '..'), input: JSON.stringify(cases, (k, v) => (Number.isNaN(v) ? 'NaN' : v)), encoding: 'utf8', maxBuffer: 1 << 26, timeout: 50_000 },
  )
  expect(r.status, r.stderr).toBe(0)
  const out = JSON.parse(r.stdout) as { supported: boolean; names: string[]; indices: number[][] }
  // the flag is present: the child must have taken the relaxed path
  expect(out.supported).toBe(true)
  return out
}

describe('nearest-code kernel: mul+add and relaxed SIMD paths', () => {
  test('the backend name says which path is used; relaxedSimd: true without support is an error', () => {
    expect(fastBackend({ threads: 1, relaxedSimd: false }).name).toBe('fast-js+wasm(1t)')
    expect(fastBackend({ threads: 2 }).name).toBe(relaxedSimdSupported() ? 'fast-js+wasm-relaxed(2t)' : 'fast-js+wasm(2t)')
    if (!relaxedSimdSupported()) expect(() => fastBackend({ relaxedSimd: true })).toThrow(/relaxed SIMD/)
    expect(() => fastBackend({ relaxedSimd: 'yes' as never })).toThrow(/relaxedSimd must be 'auto', true or false/)
  })

  test('empty rows or dot products are left to the generic loops and agree with the reference', async () => {
    for (const [n, d, k] of [[3, 0, 5], [0, 2, 5]] as const) {
      const p = program('dist', [n, d], [k, d])
      expect(planProgram(p, { wasm: true, threads: 1 }).steps.map((s) => s.kind)).not.toContain('nearest')
      const ins = [tensorOf(new Array(n * d).fill(1), [n, d]), tensorOf(new Array(k * d).fill(1), [k, d])]
      const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
      expect(Array.from(got[0]!.data)).toEqual(Array.from(interpretProgram(p, ins)[0]!.data))
    }
  })

  test('mul+add path: exact on grid inputs, near-ties only on floats, threads agree, NaN and rounding as specified', async () => {
    const got = await Promise.all(cases.map((c) => runHere(c, false)))
    cases.forEach((c, i) => {
      const want = reference(c)
      if (c.name.startsWith('floats')) expect(nearTiesOnly(c, got[i]!, want)).toBeLessThanOrEqual(5)
      else if (c.name === 'fma probe') expect(got[i]).toEqual([0]) // the rounded product ties with code 0: first index
      else expect(got[i], c.name).toEqual(want)
    })
    const one = got[cases.findIndex((c) => c.name === 'floats, 1 thread')]
    expect(got[cases.findIndex((c) => c.name === 'floats, 2 threads')]).toEqual(one)
    expect(got[cases.findIndex((c) => c.name === 'floats, 3 threads')]).toEqual(one)
    expect(got[cases.findIndex((c) => c.name === 'NaN')]).toEqual([5, 5, 5])
  })

  test('relaxed path (child process with --experimental-wasm-relaxed-simd on Node 20): same guarantees, and it really fuses', async () => {
    const { names, indices } = await relaxedIndices()
    cases.forEach((c, i) => {
      expect(names[i]).toBe(`fast-js+wasm-relaxed(${c.threads}t)`)
      const want = reference(c)
      if (c.name.startsWith('floats')) expect(nearTiesOnly(c, indices[i]!, want)).toBeLessThanOrEqual(5)
      else if (c.name !== 'fma probe') expect(indices[i], c.name).toEqual(want)
    })
    const one = indices[cases.findIndex((c) => c.name === 'floats, 1 thread')]
    expect(indices[cases.findIndex((c) => c.name === 'floats, 2 threads')]).toEqual(one)
    expect(indices[cases.findIndex((c) => c.name === 'floats, 3 threads')]).toEqual(one)
    const probe = indices[cases.findIndex((c) => c.name === 'fma probe')]!
    expect(reference(cases.find((c) => c.name === 'fma probe')!)).toEqual([1])
    if (fusedHere()) expect(probe).toEqual([1])
  })
})
