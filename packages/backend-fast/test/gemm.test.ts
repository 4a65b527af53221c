import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow, valueAndGrad } from '@tessera/core'
import { compareOutputs, toleranceFor } from '@tessera/core/testing'
import { describe, expect } from 'vitest'
import { fastBackend, fastCaps, planProgram } from '../src/index.js'
import { foldGemmTransposes } from '../src/gemm-rewrite.js'
import { gemmLayout, gemmModule, gemmSet, warmUp } from '../src/wasm/gemm.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
const rng = (seed: number) => {
  let s = seed
  return () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), (s / 2 ** 32) * 8 - 4)
}
const abs = (t: HostTensor): HostTensor => ({ ...t, data: Float32Array.from(t.data as Float32Array, Math.abs) }) as HostTensor
const randomInputs = (p: Program, seed: number): HostTensor[] => {
  const r = rng(seed)
  return p.inputs.map((v) => tensorOf(Array.from({ length: v.aval.shape.reduce((a, b) => a * b, 1) }, r), [...v.aval.shape]))
}

/** Fast outputs against the reference within the accumulate class (M from the program on |inputs|). */
async function expectClose(p: Program, ins: HostTensor[], opts: { gemmMinMacs: number }) {
  const want = interpretProgram(p, ins)
  const magnitude = interpretProgram(p, ins.map(abs))
  const got = await runOrThrow(p, ins, fastBackend({ threads: 1, ...opts }))
  expect(compareOutputs(got, want, toleranceFor('accumulate', fastCaps), { strictNaN: true, magnitude })).toBeNull()
}

const gemmSteps = (p: Program) => planProgram(p, { wasm: true, threads: 1, gemmMinMacs: 0 }).steps.filter((s) => s.kind === 'matmul' && s.gemm !== undefined).length

describe('WebAssembly GEMM', () => {
  // every layout (A and B each plain or transposed), odd sizes, sizes that are not a multiple of the
  // register tile (4 rows x 8 columns) or of the 4-step unrolled k loop, and batches
  test.prop(
    [
      fc.integer({ min: 1, max: 2 }),
      fc.integer({ min: 1, max: 23 }),
      fc.integer({ min: 17, max: 70 }),
      fc.integer({ min: 1, max: 21 }),
      fc.boolean(),
      fc.boolean(),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    ],
    { numRuns: 60 },
  )('A·B, A·Bᵀ, Aᵀ·B and Aᵀ·Bᵀ equal the reference within the accumulate tolerance', async (batch, m, k, n, ta, tb, seed) => {
    const p = traceOrThrow([f32(ta ? [batch, k, m] : [batch, m, k]), f32(tb ? [batch, n, k] : [batch, k, n])], (x: Tensor, y: Tensor) => [
      (ta ? x.mT : x).matmul(tb ? y.mT : y),
    ]).program
    expect(gemmSteps(p)).toBe(1)
    // the transposes are read through, never materialized
    expect(planProgram(p, { wasm: true, threads: 1, gemmMinMacs: 0 }).steps.filter((s) => s.kind === 'kernel').length).toBe(0)
    await expectClose(p, randomInputs(p, seed), { gemmMinMacs: 0 })
  })

  test('a dense layer of the demo\'s size: forward and gradients (x·Wᵀ, g·W, gᵀ·x)', async () => {
    const p = traceOrThrow([f32([64, 784]), f32([256, 784]), f32([64, 256])], (x: Tensor, w: Tensor, t: Tensor) => {
      const { value, grad } = valueAndGrad((ps: { x: Tensor; w: Tensor }, tt: Tensor) => ps.x.matmul(ps.w.mT).relu().sub(tt).square().sum())({ x, w }, t)
      return [value, grad.x, grad.w]
    }).program
    expect(gemmSteps(p)).toBe(3)
    await expectClose(p, randomInputs(p, 5), { gemmMinMacs: 0 })
  })

  test('GEMMs of one plan in one memory: a padded, transposed B after a larger product (stale data never leaks into the padding)', async () => {
    const p = traceOrThrow([f32([40, 70]), f32([70, 90]), f32([9, 19]), f32([5, 19])], (a: Tensor, b: Tensor, x: Tensor, y: Tensor) => [
      a.matmul(b),
      x.matmul(y.mT),
      a.matmul(b).sum().add(x.matmul(y.mT).sum()),
    ]).program
    expect(gemmSteps(p)).toBeGreaterThanOrEqual(2)
    const ins = randomInputs(p, 11)
    // the second product runs after the first in their common memory (its panels padded past n = 5)
    const backend = fastBackend({ threads: 1, gemmMinMacs: 0 })
    const want = interpretProgram(p, ins)
    const magnitude = interpretProgram(p, ins.map(abs))
    for (let r = 0; r < 2; r++) {
      const got = await runOrThrow(p, ins, backend)
      expect(compareOutputs(got, want, toleranceFor('accumulate', fastCaps), { strictNaN: true, magnitude })).toBeNull()
    }
  })

  test('small products (k <= 16, or under gemmMinMacs) keep the float64-exact loops: bit-identical', async () => {
    const p = traceOrThrow([f32([9, 10]), f32([10, 33])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
    expect(gemmSteps(p)).toBe(0)
    const q = traceOrThrow([f32([9, 20]), f32([20, 33])], (x: Tensor, y: Tensor) => [x.matmul(y)]).program
    expect(planProgram(q, { wasm: true, threads: 1 }).steps.filter((s) => s.kind === 'matmul' && s.gemm).length).toBe(0)
    for (const prog of [p, q]) {
      const ins = randomInputs(prog, 3)
      const got = await runOrThrow(prog, ins, fastBackend({ threads: 1 }))
      expect(Array.from(got[0]!.data)).toEqual(Array.from(interpretProgram(prog, ins)[0]!.data))
    }
  })
})

describe('WebAssembly GEMM on two threads', () => {
  const fill = (len: number, r: () => number) => Float32Array.from({ length: len }, r)
  // several layouts in one module (the worker runs the same module), panel counts odd and even,
  // sizes off the register tile; a split product must give the one-thread bits exactly
  test.prop(
    [
      fc.array(
        fc.record({
          m: fc.integer({ min: 1, max: 37 }),
          k: fc.integer({ min: 17, max: 90 }),
          n: fc.integer({ min: 9, max: 70 }),
          transA: fc.boolean(),
          transB: fc.boolean(),
        }),
        { minLength: 1, maxLength: 3 },
      ),
      fc.integer({ min: 0, max: 2 ** 31 - 1 }),
    ],
    { numRuns: 25 },
  )('split by panels, each product equals the one-thread result bit for bit', async (shapes, seed) => {
    const layouts = shapes.map(gemmLayout)
    const one = gemmSet(layouts, { threads: 1, threadMinMacs: Infinity })
    const two = gemmSet(layouts, { threads: 2, threadMinMacs: 0 })
    try {
      // n >= 9 gives at least two panels of 8 columns: every product is split
      expect(two.split).toEqual(layouts.map(() => true))
      expect(one.split).toEqual(layouts.map(() => false))
      const r = rng(seed)
      // twice, so the second round runs after the other products in the shared memory
      for (let round = 0; round < 2; round++)
        layouts.forEach((L, i) => {
          const a = fill(L.m * L.k, r), b = fill(L.k * L.n, r)
          const o1 = new Float32Array(L.m * L.n), o2 = new Float32Array(L.m * L.n).fill(NaN)
          one.runners[i]!.run(a, b, o1, 1)
          two.runners[i]!.run(a, b, o2, 1)
          expect(Array.from(o2)).toEqual(Array.from(o1))
        })
    } finally {
      await two.dispose()
    }
  })

  test('claiming: a thread computes only the panels left in the current epoch; a stale epoch computes nothing', () => {
    const L = gemmLayout({ m: 5, k: 19, n: 40, transA: false, transB: false })
    const P = L.nPad / L.W
    const ctrl = Math.ceil(L.bytes / 16) * 16
    const pages = Math.ceil((ctrl + 16) / 65536)
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    const ex = new WebAssembly.Instance(gemmModule([L], pages, true, false, ctrl), { env: { memory } }).exports as {
      run: (w: number, epoch: number, P: number) => void
    }
    const f32 = new Float32Array(memory.buffer), i32 = new Int32Array(memory.buffer)
    const r = rng(3)
    const a = Float32Array.from({ length: L.m * L.k }, r), b = Float32Array.from({ length: L.k * L.n }, r)
    const want = new Float32Array(L.m * L.n)
    gemmSet([L]).runners[0]!.run(a, b, want, 1)
    const c0 = L.cOff >> 2
    const reset = () => {
      f32.set(a, 0)
      f32.set(b, L.bOff >> 2)
      f32.fill(-7, c0, c0 + L.m * L.nPad)
    }
    // a stale task (epoch 4 while 5 is current) computes nothing and counts nothing
    reset()
    i32[ctrl >> 2] = (5 << 16) | 0
    i32[(ctrl >> 2) + 1] = 0
    ex.run(0, 4, P)
    expect(i32[ctrl >> 2]).toBe(5 << 16)
    expect(i32[(ctrl >> 2) + 1]).toBe(0)
    expect(f32.subarray(c0, c0 + L.m * L.nPad).every((v) => v === -7)).toBe(true)
    // two panels already taken by another thread: only the others are computed, each counted once
    i32[ctrl >> 2] = (5 << 16) | 2
    i32[(ctrl >> 2) + 1] = 2
    ex.run(0, 5, P)
    expect(i32[ctrl >> 2]).toBe((5 << 16) | P)
    expect(i32[(ctrl >> 2) + 1]).toBe(P)
    for (let i = 0; i < L.m; i++)
      for (let j = 0; j < L.n; j++) {
        const got = f32[c0 + i * L.nPad + j]!
        if (j < 2 * L.W) expect(got).toBe(-7)
        else expect(got).toBe(want[i * L.n + j])
      }
  })

  test('the warm-up (panels of no rows, columns of no rows) and empty panel ranges leave the memory as it was', () => {
    const layouts = [gemmLayout({ m: 6, k: 19, n: 13, transA: false, transB: true }), gemmLayout({ m: 9, k: 21, n: 16, transA: true, transB: false })]
    const bytes = Math.max(...layouts.map((L) => L.bytes))
    const pages = Math.ceil((bytes + 64) / 65536)
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages })
    const exports = new WebAssembly.Instance(gemmModule(layouts, pages, false), { env: { memory } }).exports
    const ex = exports as unknown as { panels: (w: number, p0: number, p1: number) => void; packAny: (k: number, n: number, raw: number, dst: number) => void }
    const u8 = new Uint8Array(memory.buffer)
    const r = rng(4)
    for (let i = 0; i < u8.length; i++) u8[i] = r() * 64
    const before = u8.slice()
    // one panels function per A row stride (76 bytes, 4 bytes), with its layouts' row tails (6 % 4, 9 % 4), each warmed
    expect(Object.keys(exports).filter((n) => n.startsWith('panelsRow')).sort()).toEqual(['panelsRow4t1', 'panelsRow76t2'])
    warmUp(exports)
    ex.panels(0, 1, 1)
    ex.panels(1, 2, 0)
    ex.packAny(19, 0, 0, 0)
    expect(u8.every((v, i) => v === before[i])).toBe(true)
  })

  test('the demo\'s dense layer with its gradients on fastBackend({ threads: 2 }) equals threads: 1 bit for bit', async () => {
    const p = traceOrThrow([f32([64, 784]), f32([128, 784]), f32([64, 128])], (x: Tensor, w: Tensor, t: Tensor) => {
      const { value, grad } = valueAndGrad((ps: { x: Tensor; w: Tensor }, tt: Tensor) => ps.x.matmul(ps.w.mT).relu().sub(tt).square().sum())({ x, w }, t)
      return [value, grad.x, grad.w]
    }).program
    const plan = planProgram(p, { wasm: true, threads: 2 })
    try {
      expect(plan.steps.filter((s) => s.kind === 'matmul' && s.gemm !== undefined).length).toBe(3)
    } finally {
      await plan.dispose()
    }
    const ins = randomInputs(p, 9)
    const b1 = fastBackend({ threads: 1 }), b2 = fastBackend({ threads: 2 })
    const g1 = await runOrThrow(p, ins, b1), g2 = await runOrThrow(p, ins, b2)
    await Promise.all([b1.dispose!(), b2.dispose!()])
    g2.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(g1[i]!.data)))
  })
})

describe('foldGemmTransposes', () => {
  test.prop([fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 }), fc.integer({ min: 0, max: 2 ** 31 - 1 })])(
    'transpose(matmul) and transpose(transpose) rewrites give the reference bit for bit, with fewer transposes',
    (m, k, n, seed) => {
      const p = traceOrThrow([f32([2, m, k]), f32([2, k, n]), f32([2, k, m])], (a: Tensor, b: Tensor, c: Tensor) => {
        const prod = a.matmul(b).mT // (a b)ᵀ: becomes bᵀ aᵀ
        const tt = c.mT.mT.add(1) // a double transpose: c itself
        const t3 = c.transpose([1, 2, 0]).transpose([0, 2, 1]) // composed into one transpose
        return [prod, tt, t3, a.matmul(b)]
      }).program
      const q = foldGemmTransposes(p)
      const transposes = (x: Program) => x.eqns.filter((e) => e.prim === 'transpose').length
      expect(transposes(q)).toBeLessThan(transposes(p))
      const ins = randomInputs(p, seed)
      const want = interpretProgram(p, ins), got = interpretProgram(q, ins)
      got.forEach((g, i) => {
        expect(g.shape).toEqual(want[i]!.shape)
        expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data))
      })
    },
  )

  test('a product read elsewhere too is not rewritten (it would be computed twice)', () => {
    const p = traceOrThrow([f32([3, 4]), f32([4, 5])], (a: Tensor, b: Tensor) => {
      const y = a.matmul(b)
      return [y.mT, y.add(1)]
    }).program
    expect(foldGemmTransposes(p).eqns.filter((e) => e.prim === 'matmul').length).toBe(1)
    expect(foldGemmTransposes(p).eqns.filter((e) => e.prim === 'transpose').length).toBe(1)
  })
})
