import { fc, test } from '@fast-check/vitest'
import { cpuBackend, interpretProgram } from '@tessera/backend-cpu'
import type { DType, HostTensor, Program, Tensor } from '@tessera/core'
import { run, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { residualProgram } from './loop-helpers.js'

type TableType = Extract<DType, 'float32' | 'int32'>
const spec = (shape: number[], dtype: DType) => ({ shape, dtype })

/** Random 32-bit patterns (as float32: every class, NaNs with payloads, ±0, subnormals, ±Inf mixed in). */
const bits = (n: number, seed: number): Int32Array => {
  let s = seed >>> 0
  const r = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), s)
  const special = new Int32Array(new Float32Array([NaN, Infinity, -Infinity, -0, 0, 1e-45, -1e-40]).buffer)
  return Int32Array.from({ length: n }, () => (r() % 7 === 0 ? special[r() % special.length]! : r() | 0))
}
const tensor = (shape: number[], dtype: DType, data: Int32Array): HostTensor =>
  ({ shape, dtype, data: dtype === 'float32' ? new Float32Array(data.buffer) : data }) as HostTensor
const asBits = (t: HostTensor) => Array.from(new Int32Array(t.data.buffer, t.data.byteOffset, t.data.length))

/** Slots of the plan's gathers taken by the copy step, by path, and those left to the reference. */
function gatherPaths(p: Program, wasm = true, gatherInPasses = true) {
  const steps = planProgram(p, { wasm, threads: 1, gatherInPasses }).steps
  const src = steps.flatMap((s) => (s.kind === 'kernel' && s.kernel.source.startsWith('/* gather rows') ? [s.kernel.source] : []))
  return {
    wasm: src.filter((s) => s.includes('wasm')).length,
    js: src.filter((s) => s.includes('js')).length,
    reference: steps.filter((s) => s.kind === 'reference' && s.eqn.prim === 'gather').length,
  }
}

/** `table.gather(i1)` as an output, and `table.gather(i1).gather(i2)` through a stored intermediate (when i1 is not empty). */
const gatherProgram = (table: number[], dt: TableType, i1: number[], i2: number[]): Program =>
  i1[0] === 0
    ? traceOrThrow([spec(table, dt), spec(i1, 'int32')], (x: Tensor, a: Tensor) => [x.gather(a, 0)]).program
    : traceOrThrow([spec(table, dt), spec(i1, 'int32'), spec(i2, 'int32')], (x: Tensor, a: Tensor, b: Tensor) => {
        const g = x.gather(a, 0)
        return [g, g.gather(b, 0)]
      }).program

async function sameAsReference(p: Program, inputs: HostTensor[], opts: { wasm: boolean }) {
  const want = interpretProgram(p, inputs)
  const backend = fastBackend({ threads: 1, wasm: opts.wasm })
  const exe = backend.compile(p)
  try {
    // twice: the second run writes into the intermediate's kept buffer
    for (let k = 0; k < 2; k++) {
      const got = await exe.run(inputs)
      got.forEach((g, i) => {
        expect(g.shape).toEqual(want[i]!.shape)
        expect(g.dtype).toBe(want[i]!.dtype)
        expect(asBits(g)).toEqual(asBits(want[i]!))
      })
    }
  } finally {
    await backend.dispose!()
  }
}

const shapes = fc.record({
  d: fc.integer({ min: 1, max: 40 }),
  trailing: fc.oneof(fc.constant([] as number[]), fc.array(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 2 })),
  n1: fc.integer({ min: 0, max: 90 }),
  n2: fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 1, maxLength: 2 }),
  dt: fc.constantFrom<TableType>('float32', 'int32'),
  seed: fc.integer({ min: 0, max: 2 ** 31 - 1 }),
  wasm: fc.boolean(),
})

describe('gather of rows as copies', () => {
  test.prop([shapes], { numRuns: 80 })('equals the reference bit for bit (float32 NaN payloads, int32, N-D rows, repeats, first and last row)', async (c) => {
    const inner = c.trailing.reduce((a, b) => a * b, 1)
    const p = gatherProgram([c.d, ...c.trailing], c.dt, [c.n1], c.n2)
    const r = bits(c.d * inner + c.n1 + 64, c.seed)
    const pick = (n: number, d: number, off: number) =>
      Int32Array.from({ length: n }, (_, j) => (j === 0 ? 0 : j === 1 ? d - 1 : j === 2 ? 0 : (r[off + j]! >>> 1) % d))
    const i1 = pick(c.n1, c.d, c.d * inner)
    const n2 = c.n2.reduce((a, b) => a * b, 1)
    const inputs = [tensor([c.d, ...c.trailing], c.dt, r.slice(0, c.d * inner)), tensor([c.n1], 'int32', i1)]
    if (c.n1 > 0) inputs.push(tensor(c.n2, 'int32', pick(n2, c.n1, 0)))
    await sameAsReference(p, inputs, { wasm: c.wasm })
  })

  test('each path is taken where its sizes say: rows of 4+ elements from a table no larger than the result in wasm, else JS', () => {
    // W1-like: 64 codes of 8, 256 indices: the table (2 KiB) is smaller than the result (8 KiB)
    expect(gatherPaths(gatherProgram([64, 8], 'float32', [256], [3]))).toEqual({ wasm: 1, js: 1, reference: 0 })
    // rows of 3 elements, and a table larger than the rows gathered: JS
    expect(gatherPaths(gatherProgram([64, 3], 'int32', [256], [300]))).toEqual({ wasm: 0, js: 2, reference: 0 })
    expect(gatherPaths(gatherProgram([64, 8], 'float32', [256], [300]), false)).toEqual({ wasm: 0, js: 2, reference: 0 })
    // along a later axis with something before it, and bool tables: the reference
    const later = traceOrThrow([spec([3, 5], 'float32'), spec([4], 'int32')], (x: Tensor, i: Tensor) => [x.gather(i, 1)]).program
    expect(gatherPaths(later)).toEqual({ wasm: 0, js: 0, reference: 1 })
    const lead1 = traceOrThrow([spec([1, 5, 4], 'float32'), spec([20], 'int32')], (x: Tensor, i: Tensor) => [x.gather(i, 1)]).program
    expect(gatherPaths(lead1)).toEqual({ wasm: 1, js: 0, reference: 0 })
    // W1b-like: a 4 MiB codebook is over the copy memory's table limit (it would stay resident): JS
    expect(gatherPaths(gatherProgram([4096, 256], 'float32', [16384], [3]))).toEqual({ wasm: 0, js: 2, reference: 0 })
  })

  test.prop([fc.integer({ min: 64, max: 300 }), fc.integer({ min: 1, max: 30 }), fc.integer({ min: 0, max: 2 ** 31 - 1 })], { numRuns: 15 })(
    'rows of 64+ elements copied with one set each (the JS path) equal the reference bit for bit',
    async (inner, d, seed) => {
      const p = gatherProgram([d, inner], 'float32', [50], [7])
      const r = bits(d * inner + 50 + 7, seed)
      const ix = Int32Array.from({ length: 50 }, (_, j) => (j === 0 ? d - 1 : (r[d * inner + j]! >>> 1) % d))
      const ix2 = Int32Array.from({ length: 7 }, (_, j) => (r[d * inner + 50 + j]! >>> 1) % 50)
      const inputs = [tensor([d, inner], 'float32', r.slice(0, d * inner)), tensor([50], 'int32', ix), tensor([7], 'int32', ix2)]
      await sameAsReference(p, inputs, { wasm: false })
    },
  )

  test('along an axis after size-1 axes, wasm and JS, equal the reference', async () => {
    const p = traceOrThrow([spec([1, 5, 4], 'float32'), spec([2, 10], 'int32'), spec([3], 'int32')], (x: Tensor, i: Tensor, j: Tensor) => {
      const g = x.gather(i, 1)
      return [g, x.gather(j, 1)]
    }).program
    const inputs = [tensor([1, 5, 4], 'float32', bits(20, 5)), tensor([2, 10], 'int32', Int32Array.from({ length: 20 }, (_, k) => (k * 3) % 5)), tensor([3], 'int32', new Int32Array([4, 0, 4]))]
    await sameAsReference(p, inputs, { wasm: true })
    await sameAsReference(p, inputs, { wasm: false })
  })

  test('a gather of several chunks (the last one partial) equals the reference, and a bad index in a later chunk gives its error', async () => {
    // rows of 64 floats: 256 rows a chunk, 1000 indices are 4 chunks
    const p = traceOrThrow([spec([300, 64], 'float32'), spec([1000], 'int32')], (x: Tensor, i: Tensor) => [x.gather(i, 0)]).program
    expect(gatherPaths(p)).toEqual({ wasm: 1, js: 0, reference: 0 })
    const idx = Int32Array.from({ length: 1000 }, (_, j) => (j * 37 + (j >> 3)) % 300)
    idx[999] = 299
    const inputs = [tensor([300, 64], 'float32', bits(300 * 64, 11)), tensor([1000], 'int32', idx)]
    await sameAsReference(p, inputs, { wasm: true })
    idx[700] = 300
    idx[900] = -1
    const backend = fastBackend({ threads: 1 })
    const r = await run(p, inputs, backend)
    await backend.dispose!()
    if (r._tag !== 'Left') throw new Error('expected an error')
    expect(r.left.message).toBe('gather: index 300 (at flat position 700) is out of range [0, 300) on axis 0')
  })

  const badIndex = fc.record({
    n: fc.integer({ min: 1, max: 300 }),
    at: fc.nat(),
    bad: fc.constantFrom(-1, -(2 ** 31), 16, 17, 2 ** 31 - 1),
    second: fc.boolean(),
    inner: fc.constantFrom(1, 4, 8),
    wasm: fc.boolean(),
  })
  test.prop([badIndex], { numRuns: 40 })('an index outside the axis gives the reference error (the first bad one), and the executable still runs', async (c) => {
    const d = 16
    const p = traceOrThrow([spec([d, c.inner], 'float32'), spec([c.n], 'int32')], (x: Tensor, i: Tensor) => [x.gather(i, 0).add(1)]).program
    const table = tensor([d, c.inner], 'float32', bits(d * c.inner, c.n))
    const idx = Int32Array.from({ length: c.n }, (_, j) => (j * 7) % d)
    const at = c.at % c.n
    idx[at] = c.bad
    if (c.second && at + 1 < c.n) idx[at + 1] = -c.bad - 1
    const inputs = [table, tensor([c.n], 'int32', idx)]
    let want: unknown
    try {
      interpretProgram(p, inputs)
    } catch (e) {
      want = e
    }
    expect(want).toBeDefined()
    const backend = fastBackend({ threads: 1, wasm: c.wasm })
    const [got, cpu] = await Promise.all([run(p, inputs, backend), run(p, inputs, cpuBackend())])
    for (const r of [got, cpu]) {
      if (r._tag !== 'Left') throw new Error('expected an error')
      expect({ kind: r.left.kind, message: r.left.message }).toEqual({ kind: (want as { kind: string }).kind, message: (want as Error).message })
    }
    expect((want as Error).message).toContain(`index ${c.bad} (at flat position ${at})`)
    // a valid call afterwards
    idx[at] = 0
    if (at + 1 < c.n) idx[at + 1] = 1
    await sameAsReference(p, inputs, { wasm: c.wasm })
    await backend.dispose!()
  })
})

describe("W1's and RVQ's plans", () => {
  // bench/src/programs.ts's nearestProgram and residualProgram, at small sizes
  const nearest = (n: number, d: number, k: number) =>
    traceOrThrow([spec([n, d], 'float32'), spec([k, d], 'float32')], (x: Tensor, cb: Tensor) => {
      const dist = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1))
      const idx = dist.argmin(-1)
      return [idx, cb.gather(idx, 0)]
    }).program


  test('take the WebAssembly row copy for every gather of codes they store (RVQ stores none: its passes gather them)', () => {
    expect(gatherPaths(nearest(256, 16, 64))).toEqual({ wasm: 1, js: 0, reference: 0 })
    expect(gatherPaths(residualProgram(256, 16, 64, 8), true, false)).toEqual({ wasm: 8, js: 0, reference: 0 })
    expect(gatherPaths(residualProgram(256, 16, 64, 8))).toEqual({ wasm: 0, js: 0, reference: 0 })
  })

  test("RVQ's quantized output is the sum of its own indices' codes, bit for bit (2 threads)", async () => {
    const [n, d, layers] = [300, 16, 3]
    const p = residualProgram(n, d, 64, layers)
    let s = 7
    const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), s / 2 ** 32 - 0.5)
    const inputs = p.inputs.map((v) => ({ shape: [...v.aval.shape], dtype: 'float32', data: Float32Array.from({ length: v.aval.shape[0]! * d }, rnd) }) as HostTensor)
    const backend = fastBackend({ threads: 2 })
    const r = await run(p, inputs, backend)
    await backend.dispose!()
    if (r._tag === 'Left') throw r.left
    const [q, ...idx] = r.right
    const want = new Float32Array(n * d)
    for (let i = 0; i < n; i++)
      for (let t = 0; t < d; t++) {
        let acc = inputs[1]!.data[idx[0]!.data[i]! * d + t]!
        for (let l = 1; l < layers; l++) acc = Math.fround(acc + inputs[l + 1]!.data[idx[l]!.data[i]! * d + t]!)
        want[i * d + t] = acc
      }
    expect(asBits(q!)).toEqual(asBits({ shape: [n, d], dtype: 'float32', data: want } as HostTensor))
  })
})

describe('gathers read only by elementwise passes, gathered by the passes', () => {
  const f32s = (n: number, seed: number) => {
    let s = seed >>> 0
    return Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), s / 2 ** 32 - 0.5))
  }
  /** r - t[i] and q + t[i] (one gather, two passes), or with `alsoMatmul` the gather also feeds a product. */
  const twoPasses = (d: number, inner: number, n: number, dt: TableType, alsoMatmul = false) =>
    traceOrThrow([spec([d, inner], dt), spec([n], 'int32'), spec([n, inner], dt), spec([n, inner], dt)], (t: Tensor, i: Tensor, r: Tensor, q: Tensor) => {
      const g = t.gather(i, 0)
      const outs = [r.sub(g), q.add(g).mul(q)]
      return alsoMatmul ? [...outs, g.matmul(t.mT)] : outs
    }).program
  const inputsOf = (d: number, inner: number, n: number, dt: TableType, seed: number) => {
    const data = (len: number, k: number) => (dt === 'float32' ? f32s(len, seed + k) : Int32Array.from(f32s(len, seed + k), (v) => Math.round(v * 2000)))
    const idx = Int32Array.from(f32s(n, seed + 9), (v, j) => (j === 0 ? d - 1 : j === 1 ? 0 : Math.floor((v + 0.5) * d) % d))
    return [{ shape: [d, inner], dtype: dt, data: data(d * inner, 1) }, { shape: [n], dtype: 'int32', data: idx }, { shape: [n, inner], dtype: dt, data: data(n * inner, 2) }, { shape: [n, inner], dtype: dt, data: data(n * inner, 3) }] as HostTensor[]
  }
  const stepsOf = (p: Program, gatherInPasses: boolean) => planProgram(p, { wasm: true, threads: 1, gatherInPasses }).steps.map((s) => (s.kind === 'kernel' ? s.prim : s.kind))

  test.prop([fc.constantFrom(3, 4, 5, 8, 64), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 0, max: 3 }), fc.constantFrom<TableType>('float32', 'int32'), fc.nat(1000)], { numRuns: 20 })(
    'equal the reference bit for bit (rows of any width, several chunks, the last partial), with no gather step and no stored rows',
    async (inner, d, extra, dt, seed) => {
      // at least 2^12 elements (the passes' minimum), several chunks for narrow rows
      const n = Math.ceil(4096 / inner) + extra * 1500 + 1
      const p = twoPasses(d, inner, n, dt)
      expect(stepsOf(p, true)).not.toContain('gather')
      expect(stepsOf(p, false)).toContain('gather')
      await sameAsReference(p, inputsOf(d, inner, n, dt, seed), { wasm: true })
    },
  )

  test('a gather some other step reads stays stored (here a product reads it)', async () => {
    const p = twoPasses(40, 8, 1024, 'float32', true)
    expect(stepsOf(p, true)).toContain('gather')
    await sameAsReference(p, inputsOf(40, 8, 1024, 'float32', 4), { wasm: true })
  })

  test.prop([fc.integer({ min: 0, max: 2999 }), fc.constantFrom(-1, 40, 2 ** 31 - 1)], { numRuns: 10, examples: [[2999, -1], [0, 40]] })(
    "an index outside the table gives the reference's error (the first bad one), and the executable still runs",
    async (at, bad) => {
      const p = twoPasses(40, 8, 3000, 'float32')
      const inputs = inputsOf(40, 8, 3000, 'float32', 5)
      const idx = inputs[1]!.data as Int32Array
      const old = idx[at]!
      idx[at] = bad
      // a second bad index after the first (where there is room): the error names the first
      const later = at + 5 < 3000 ? at + 5 : undefined
      if (later !== undefined) idx[later] = 41
      let want: Error | undefined
      try {
        interpretProgram(p, inputs)
      } catch (e) {
        want = e as Error
      }
      expect(want?.message).toContain(`index ${bad} (at flat position ${at})`)
      const backend = fastBackend({ threads: 1 })
      try {
        const exe = backend.compile(p)
        await expect(exe.run(inputs)).rejects.toThrow(want!.message)
        idx[at] = old
        if (later !== undefined) idx[later] = 1
        const got = await exe.run(inputs)
        expect(got.map(asBits)).toEqual(interpretProgram(p, inputs).map(asBits))
      } finally {
        await backend.dispose!()
      }
    },
  )
})
