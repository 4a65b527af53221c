import { describe, expect, test } from 'vitest'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { run, traceOrThrow } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import { garbageLike } from '@tessera/core/testing'
import { fastBackend } from '../src/index.js'
import { entropyProgram, f32, residualProgram, values } from './loop-helpers.js'

/**
 * Run option `into` (outputs written into arrays the caller gives) on the plans whose kernels
 * write outputs themselves: the nearest-code search, gathers done by elementwise passes, the
 * dense GEMM, threaded tanh passes and row sums. Each given array is filled with garbage first, so
 * a kernel that wrote only part of its output, or counted on a zeroed array, fails.
 */


/** Every output's bits as the fresh run's (int32 views compared in one pass: the threaded case has 2^18 elements). */
const expectBitsOf = (got: HostTensor[], want: HostTensor[], what: string) => {
  expect(got.length).toBe(want.length)
  got.forEach((g, i) => {
    const a = new Int32Array(g.data.buffer, g.data.byteOffset, g.data.byteLength >> 2)
    const b = new Int32Array(want[i]!.data.buffer, want[i]!.data.byteOffset, want[i]!.data.byteLength >> 2)
    const j = a.findIndex((v, t) => v !== b[t])
    if (a.length !== b.length || j >= 0) expect.fail(`${what}: output ${i} differs at element ${j}: ${g.data[j]} vs ${want[i]!.data[j]}`)
  })
}

const inputsFor = (p: Program, seed: number): HostTensor[] =>
  p.inputs.map((v, i) => {
    const n = v.aval.shape.reduce((a, b) => a * b, 1)
    return { shape: [...v.aval.shape], dtype: 'float32', data: Float32Array.from(values(n, seed + i)) } as HostTensor
  })

/** A dense layer with tanh, a second layer, a mean over rows and the argmax of each row (the GEMM, elementwise passes and reductions). */
const denseProgram = (m: number, k: number, n: number) =>
  traceOrThrow([f32([m, k]), f32([k, n]), f32([n, n])], (x: Tensor, w1: Tensor, w2: Tensor) => {
    const h = x.matmul(w1).tanh()
    const y = h.matmul(w2)
    return [y, y.mean(0), y.argmax(-1), h]
  }).program

const programs: [string, () => Program][] = [
  ['residual VQ, 3 layers (search, gathers in passes)', () => residualProgram(300, 16, 64, 3)],
  ['two dense layers (GEMMs, tanh pass, row reductions)', () => denseProgram(96, 128, 64)],
  ['a tanh over 2^18 elements (threaded pass)', () => traceOrThrow([f32([1 << 18])], (x: Tensor) => [x.tanh(), x.mul(2)]).program],
  ["LFQ's entropy terms and each row's largest probability (a row chain)", () => entropyProgram(4096, 10, 1024, true)],
]

describe('run option into', () => {
  const configs = [{ threads: 1 }, { threads: 2 }, { threads: 2, wasm: false }] as const
  for (const opts of configs)
    for (const [name, make] of programs)
      test(`${name}, ${JSON.stringify(opts)}: the given arrays hold the fresh run's bits`, async () => {
        const p = make()
        const ins = inputsFor(p, 3)
        const backend = fastBackend(opts)
        try {
          const exe = backend.compile(p)
          const fresh = await exe.run(ins)
          // kernels start their worker threads after the first call (a timer): the calls with into run with them
          await new Promise((r) => setTimeout(r, 100))
          for (let call = 0; call < 3; call++) {
            const into = fresh.map(garbageLike)
            const got = await exe.run(ins, { into })
            got.forEach((o, i) => expect(o.data).toBe(into[i]!.data))
            expectBitsOf(got, fresh, `${name}, call ${call + 2}`)
          }
          // some outputs given, others fresh: the fresh ones are new arrays
          const some = [undefined, garbageLike(fresh[1]!)]
          const mixed = await exe.run(ins, { into: some })
          expect(mixed[1]!.data).toBe(some[1]!.data)
          expect(mixed[0]!.data).not.toBe(fresh[0]!.data)
          expectBitsOf(mixed, fresh, `${name}, two outputs given`)
          await exe.dispose()
        } finally {
          await backend.dispose!()
        }
      })

  test('an input returned as an output, and an output returned twice, are copied into their given arrays', async () => {
    const p = traceOrThrow([f32([5])], (x: Tensor) => {
      const y = x.mul(3)
      return [x, y, y]
    }).program
    const x: HostTensor = { shape: [5], dtype: 'float32', data: Float32Array.of(1, 2, 3, 4, 5) }
    for (const backend of [fastBackend({ threads: 1 }), cpuBackend()]) {
      const into = [0, 1, 2].map(() => garbageLike({ shape: [5], dtype: 'float32', data: new Float32Array(5) } as HostTensor))
      const r = await run(p, [x], backend, { into })
      if (r._tag === 'Left') throw r.left
      r.right.forEach((o, i) => expect(o.data).toBe(into[i]!.data))
      expect(Array.from(r.right[0]!.data)).toEqual([1, 2, 3, 4, 5])
      expect(Array.from(r.right[1]!.data)).toEqual([3, 6, 9, 12, 15])
      expect(Array.from(r.right[2]!.data)).toEqual([3, 6, 9, 12, 15])
      // only the second of the repeated output given: the first is a fresh array of its own
      const one = garbageLike(r.right[2]!)
      const s = await run(p, [x], backend, { into: [undefined, undefined, one] })
      if (s._tag === 'Left') throw s.left
      expect(s.right[2]!.data).toBe(one.data)
      expect(s.right[1]!.data).not.toBe(one.data)
      expect(Array.from(s.right[1]!.data)).toEqual([3, 6, 9, 12, 15])
      await backend.dispose!()
    }
  })

  describe('bad into: a Left naming the entry, no output written', () => {
    const p = traceOrThrow([f32([4])], (x: Tensor) => [x.add(1), x.argmax(0)]).program
    const x: HostTensor = { shape: [4], dtype: 'float32', data: Float32Array.of(1, 2, 3, 4) }
    const f4 = (): HostTensor => ({ shape: [4], dtype: 'float32', data: new Float32Array(4).fill(9) })
    const shared = new Float32Array(8)
    const cases: [string, () => unknown[], RegExp][] = [
      ['the wrong shape', () => [{ shape: [2, 2], dtype: 'float32', data: new Float32Array(4) }], /into\[0\] is f32\[2,2\]; output 0 is f32\[4\]/],
      ['the wrong dtype', () => [undefined, { shape: [], dtype: 'float32', data: new Float32Array(1) }], /into\[1\] is f32\[\]; output 1 is i32\[\]/],
      ['data of the wrong class', () => [{ shape: [4], dtype: 'float32', data: new Float64Array(4) }], /into\[0\] has Float64Array data/],
      ['more entries than outputs', () => [f4(), undefined, f4()], /into has 3 entries; the program has 2 output\(s\)/],
      ['not an array', () => f4() as unknown as unknown[], /into must be an array/],
      ['the input itself', () => [x], /into\[0\] shares memory with input 0/],
      ['a view overlapping the input', () => [{ shape: [4], dtype: 'float32', data: new Float32Array(x.data.buffer, 0, 4) }], /into\[0\] shares memory with input 0/],
      [
        'two entries over one buffer',
        () => [{ shape: [4], dtype: 'float32', data: shared.subarray(0, 4) }, { shape: [], dtype: 'int32', data: new Int32Array(shared.buffer, 12, 1) }],
        /into\[1\] shares memory with into\[0\]/,
      ],
    ]
    for (const [what, into, message] of cases)
      test(what, async () => {
        for (const backend of [fastBackend({ threads: 1 }), cpuBackend()]) {
          const given = into()
          const before = Array.isArray(given) ? given.map((t) => (t ? Array.from((t as HostTensor).data) : undefined)) : []
          const r = await run(p, [x], backend, { into: given as HostTensor[] })
          expect(r._tag).toBe('Left')
          if (r._tag === 'Left') expect(r.left.message).toMatch(message)
          // the executable refuses it as well (a throw, not a run with a wrong result)
          const exe = backend.compile(p)
          await expect(exe.run([x], { into: given as HostTensor[] })).rejects.toThrow(message)
          if (Array.isArray(given)) given.forEach((t, i) => t && expect(Array.from((t as HostTensor).data)).toEqual(before[i]))
          expect(Array.from(x.data)).toEqual([1, 2, 3, 4])
          await backend.dispose!()
        }
      })
    test('two entries over one buffer that do not overlap are fine', async () => {
      const b = new ArrayBuffer(32)
      const into: HostTensor[] = [{ shape: [4], dtype: 'float32', data: new Float32Array(b, 0, 4) }, { shape: [], dtype: 'int32', data: new Int32Array(b, 16, 1) }]
      const r = await run(p, [x], fastBackend({ threads: 1 }), { into })
      if (r._tag === 'Left') throw r.left
      expect(Array.from(r.right[0]!.data)).toEqual([2, 3, 4, 5])
      expect(Array.from(r.right[1]!.data)).toEqual([3])
    })
  })
})
