import fc from 'fast-check'
import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import type { Backend, HostTensor, Tensor } from '../src/index.js'
import {
  Builder, foldConstants, interpretProgram, localCollectives, makeProgram, printProgram, referenceCaps, run, runCollective,
  soloCollective, splitStages, tensorOf, traceOrThrow, traceValueAndGrad, typecheck,
} from '../src/index.js'

/** The reference evaluator as a backend (core's tests depend on no backend package). */
const reference: Backend = {
  name: 'reference',
  caps: referenceCaps,
  compile: (p) => ({ run: async (ins) => interpretProgram(p, ins), dispose() {} }),
}

/** Runs `program` on every rank at once, rank r on `inputs[r]`, through in-thread collectives. */
async function runRanks(program: ReturnType<typeof traceOrThrow>['program'], inputs: readonly (readonly HostTensor[])[]) {
  const comms = localCollectives(inputs.length)
  const outs = await Promise.all(comms.map((c, r) => runCollective(reference, program, inputs[r]!, c)))
  return outs.map((o) => {
    if (E.isLeft(o)) throw o.left
    return o.right
  })
}

const f32s = (n: number) => fc.array(fc.float({ min: -100, max: 100, noNaN: true, noDefaultInfinity: true }), { minLength: n, maxLength: n })

describe('stage splitting', () => {
  test('a program is cut at its collectives; independent all-reduces share a round', () => {
    const { program } = traceOrThrow([{ shape: [3], dtype: 'float32' }] as const, (x: Tensor) => {
      const a = x.mul(2).allReduce()
      const b = x.exp().allReduce('mean') // independent of a: same round
      const c = a.add(b).allReduce() // second round
      return [c.add(x), a]
    })
    const s = splitStages(program)
    expect(s.stages.length).toBe(3)
    expect(s.rounds.map((r) => r.map((e) => e.params.op))).toEqual([['sum', 'mean'], ['sum'], []])
    for (const st of s.stages) expect(E.isRight(typecheck(st.program))).toBe(true)
    expect(printProgram(s.stages[0]!.program)).toMatchInlineSnapshot(`
      "{ lambda a:f32[3] .
        b:f32[] = full[dtype="float32" shape=[] value=2]
        c:f32[3] = broadcast[shape=[3]] b
        d:f32[3] = mul a c
        e:f32[3] = exp a
        in (d, e) }"
    `)
    // the last stage reads the first round's and second round's results and the program input
    expect(s.stages[2]!.program.inputs.length).toBe(2)
  })

  test('a program without collectives is one stage and runs as with run()', async () => {
    const { program } = traceOrThrow([{ shape: [4], dtype: 'float32' }] as const, (x: Tensor) => x.mul(x).sum())
    expect(splitStages(program).stages.length).toBe(1)
    const x = tensorOf([1, 2, 3, 4], [4])
    const got = await runCollective(reference, program, [x], soloCollective())
    expect(E.isRight(got) && Array.from(got.right[0]!.data)).toEqual([30])
  })
})

describe('runCollective', () => {
  test('N ranks reducing their shards equal one process reducing the whole batch, bit for bit', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 5 }), fc.integer({ min: 0, max: 1000 }), async (size, n, seed) => {
        const data = fc.sample(f32s(size * n * 3), { numRuns: 1, seed })[0]!
        const whole = tensorOf(data, [size * n, 3])
        // one process: column sums and means over all rows
        const single = traceOrThrow([whole] as const, (x: Tensor) => [x.sum(0), x.mean(0)])
        const want = interpretProgram(single.program, [whole])
        // each rank: sums over its rows, then all-reduced (the mean is the mean of equal-sized shards' means)
        const shard = traceOrThrow([{ shape: [n, 3], dtype: 'float32' }] as const, (x: Tensor) => [x.sum(0).allReduce(), x.sum(0).allReduce().div(size * n)])
        const shards = Array.from({ length: size }, (_, r) => [tensorOf(data.slice(r * n * 3, (r + 1) * n * 3), [n, 3])])
        const got = await runRanks(shard.program, shards)
        for (const outs of got) {
          // every rank holds the same values; integers and small sums agree exactly, others within
          // one float32 rounding of the partial sums
          expect(Array.from(outs[0]!.data)).toEqual(Array.from(got[0]![0]!.data))
          outs[0]!.data.forEach((v, i) => {
            const mag = data.filter((_, j) => j % 3 === i).reduce((a, b) => a + Math.abs(b), 0)
            expect(Math.abs(v - want[0]!.data[i]!)).toBeLessThanOrEqual(mag * 2 ** -23 * size)
          })
        }
      }),
      { numRuns: 30 },
    )
  })

  test('all_reduce sums in float64 in rank order and rounds once; mean divides that sum', async () => {
    const { program } = traceOrThrow([{ shape: [2], dtype: 'float32' }] as const, (x: Tensor) => [x.allReduce('sum'), x.allReduce('mean')])
    // 2^24 + 1 + 1 in float32 steps would be 2^24; rounded once it is 2^24 + 2
    const got = await runRanks(program, [[tensorOf([2 ** 24, 1], [2])], [tensorOf([1, 2], [2])], [tensorOf([1, 4], [2])]])
    for (const [sum, mean] of got) {
      expect(Array.from(sum!.data)).toEqual([2 ** 24 + 2, 7])
      expect(Array.from(mean!.data)).toEqual([Math.fround((2 ** 24 + 2) / 3), Math.fround(7 / 3)])
    }
  })

  test('int32 sums wrap around like every int32 op', async () => {
    const { program } = traceOrThrow([{ shape: [1], dtype: 'int32' }] as const, (x: Tensor) => x.allReduce())
    const got = await runRanks(program, [[tensorOf([2 ** 31 - 1], [1], 'int32')], [tensorOf([2], [1], 'int32')]])
    expect(Array.from(got[1]![0]!.data)).toEqual([-(2 ** 31) + 1])
  })

  test('axis_index is the rank; a collective of another size is refused by name', async () => {
    const { program } = traceOrThrow([{ shape: [], dtype: 'float32' }] as const, (x: Tensor) => x.builder.axisIndex(3).cast('float32').add(x))
    const got = await runRanks(program, [0, 1, 2].map(() => [tensorOf([10], [])]))
    expect(got.map((o) => o[0]!.data[0])).toEqual([10, 11, 12])
    const two = localCollectives(2)
    const r = await runCollective(reference, program, [tensorOf([0], [])], two[0]!)
    expect(E.isLeft(r) && r.left.where).toBe('axis_index')
    expect(E.isLeft(r) && r.left.message).toContain('traced for 3 rank(s)')
  })

  test('one rank is the identity', async () => {
    const { program } = traceOrThrow([{ shape: [3], dtype: 'float32' }] as const, (x: Tensor) => [x.allReduce('sum'), x.allReduce('mean')])
    const x = tensorOf([1.5, -2, 3e-8], [3])
    const got = await runCollective(reference, program, [x], soloCollective())
    expect(E.isRight(got) && got.right.map((t) => Array.from(t.data))).toEqual([Array.from(x.data), Array.from(x.data)])
  })

  test('a plain run of a program with a collective is an error naming the primitive, never an identity', async () => {
    for (const build of [(x: Tensor) => x.allReduce(), (x: Tensor) => x.add(x.builder.axisIndex(1).cast('float32'))]) {
      const { program } = traceOrThrow([{ shape: [2], dtype: 'float32' }] as const, build)
      const r = await run(program, [tensorOf([1, 2], [2])], reference)
      expect(E.isLeft(r)).toBe(true)
      const prim = program.eqns.find((e) => e.prim === 'all_reduce' || e.prim === 'axis_index')!.prim
      expect(E.isLeft(r) && r.left.message).toContain(`${prim} is a collective`)
      expect(E.isLeft(r) && r.left.message).toContain('runCollective')
    }
  })

  test('ranks that disagree on what they reduce get an error naming the ranks', async () => {
    const comms = localCollectives(2)
    const a = comms[0]!.allReduce([tensorOf([1, 2], [2])], 'sum')
    const b = comms[1]!.allReduce([tensorOf([1, 2, 3], [3])], 'sum')
    await expect(a).rejects.toThrow(/rank 1 contributed f32\[3\] where rank 0 contributed f32\[2\]/)
    await expect(b).rejects.toThrow(/rank 1/)
  })

  test('bad collectives and inputs are Lefts naming them', async () => {
    const { program } = traceOrThrow([{ shape: [2], dtype: 'float32' }] as const, (x: Tensor) => x.allReduce())
    const x = tensorOf([1, 2], [2])
    const notComm = await runCollective(reference, program, [x], {} as never)
    expect(E.isLeft(notComm) && notComm.left.message).toContain('collective must be a Collective')
    const badRank = await runCollective(reference, program, [x], { rank: 2, size: 2, allReduce: async (t) => [...t] })
    expect(E.isLeft(badRank) && badRank.left.message).toContain('collective.rank')
    const badInput = await runCollective(reference, program, [tensorOf([1, 2, 3], [3])], soloCollective())
    expect(E.isLeft(badInput) && badInput.left.message).toContain('input 0')
    const liar = await runCollective(reference, program, [x], { rank: 0, size: 1, allReduce: async () => [tensorOf([1], [1])] })
    expect(E.isLeft(liar) && liar.left.message).toContain('returned f32[1] for a f32[2] value')
  })
})

describe('all_reduce in the IR', () => {
  test('shape rule: identity; mean needs float32; op is checked', () => {
    const b = new Builder()
    expect(b.input({ shape: [2, 3], dtype: 'int32' }).allReduce('sum').aval).toEqual({ shape: [2, 3], dtype: 'int32' })
    expect(() => b.input({ shape: [2], dtype: 'int32' }).allReduce('mean')).toThrow(/all_reduce: operand has dtype int32/)
    expect(() => b.input({ shape: [2], dtype: 'bool' }).allReduce('sum')).toThrow(/all_reduce/)
    expect(() => b.input({ shape: [2], dtype: 'float32' }).allReduce('max' as never)).toThrow(/op must be 'sum' or 'mean'/)
    expect(() => b.axisIndex(0)).toThrow(/axis_index: size 0 must be a positive integer/)
  })

  test('constant folding never folds an all-reduce of a known value', () => {
    const b = new Builder()
    const c = b.constant([1, 2], [2]).allReduce()
    const p = foldConstants(makeProgram([], b.eqns, [c.v]))
    expect(p.eqns.some((e) => e.prim === 'all_reduce')).toBe(true)
  })

  test('VJP (psum convention): each rank gets the gradient of the sum over ranks of every rank objective', async () => {
    // each rank: loss = sum(allReduce(x * w)); the sum over ranks of the losses is size * sum_r sum(x_r * w),
    // so d/dx_r = size * w (and mean: d/dx_r = w)
    for (const op of ['sum', 'mean'] as const) {
      const traced = traceValueAndGrad([{ shape: [3], dtype: 'float32' }, { shape: [3], dtype: 'float32' }] as const, (x: Tensor, w: Tensor) => x.mul(w).allReduce(op).sum())
      if (E.isLeft(traced)) throw traced.left
      const w = tensorOf([1, -2, 0.5], [3])
      const size = 3
      const got = await runRanks(traced.right.program, Array.from({ length: size }, (_, r) => [tensorOf([r, r + 1, r + 2], [3]), w]))
      const { value, grad } = traced.right.unflattenOutputs(got[1]!) as unknown as { value: HostTensor; grad: HostTensor }
      const xs = [0, 1, 2].map((r) => [r, r + 1, r + 2])
      const total = xs.reduce((a, x) => a + x[0]! * 1 + x[1]! * -2 + x[2]! * 0.5, 0)
      expect(value.data[0]).toBeCloseTo(op === 'sum' ? total : total / size, 5)
      expect(Array.from(grad.data)).toEqual(Array.from(w.data).map((v) => (op === 'sum' ? size * v : v)))
    }
  })
})
