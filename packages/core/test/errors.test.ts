import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import type { Aval, Backend, Eqn, ErrorKind, Program, Tensor } from '../src/index.js'
import { TesseraError, makeProgram, run, tensorOf, trace, traceOrThrow, typecheck } from '../src/index.js'

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })
const i32 = (...shape: number[]): Aval => ({ shape, dtype: 'int32' })

function expectLeft<A>(r: E.Either<TesseraError, A>, kind: ErrorKind, where: string, ...mentions: string[]) {
  if (E.isRight(r)) throw new Error(`expected an error from ${where}, got a result`)
  const e = r.left
  expect(e).toBeInstanceOf(TesseraError)
  expect(e.kind).toBe(kind)
  expect(e.where).toBe(where)
  for (const m of mentions) expect(e.message).toContain(m)
}

const traced = (specs: readonly Aval[], fn: (...ts: Tensor[]) => Tensor) => trace(specs, (...ts: Tensor[]) => fn(...ts))

describe('shape and dtype errors surface when the program is built, naming op and sizes', () => {
  test('wrong rank: matmul operands of different rank, mT of a vector, transpose perm of the wrong length', () => {
    expectLeft(
      traced([f32(2, 3, 4), f32(4, 5)], (a, b) => a.builder.bind('matmul', {}, [a, b])),
      'shape', 'matmul', '[2,3,4]', '[4,5]', 'same rank',
    )
    expectLeft(traced([f32(3)], (a) => a.mT), 'shape', 'mT', '[3]', 'rank >= 2')
    expectLeft(traced([f32(2, 3)], (a) => a.transpose([0])), 'shape', 'transpose', '[0]', '[2,3]')
  })

  test('mismatched broadcast', () => {
    expectLeft(traced([f32(2, 3), f32(4)], (a, b) => a.add(b)), 'shape', 'add', '[2,3]', '[4]', 'sizes 3 and 4')
    expectLeft(traced([f32(2, 3)], (a) => a.broadcastTo([2, 5])), 'shape', 'broadcast', '[2,3]', '[2,5]', 'size 3')
    // batch axes of matmul broadcast too
    expectLeft(traced([f32(2, 5, 2), f32(3, 2, 4)], (a, b) => a.matmul(b)), 'shape', 'matmul', 'cannot broadcast [2] with [3]')
  })

  test('axis out of range', () => {
    expectLeft(traced([f32(2, 3)], (a) => a.sum(2)), 'shape', 'reduce_sum', 'axis 2', 'rank 2')
    expectLeft(traced([f32(2, 3)], (a) => a.argmin(-3)), 'shape', 'argmin', 'axis -3', 'rank 2')
    expectLeft(traced([f32(2, 3)], (a) => a.sliceAxis(4, 0, 1)), 'shape', 'slice', 'axis 4', 'rank 2')
    expectLeft(traced([f32(2, 3)], (a) => a.gather(a.builder.iota([2], 0), 2)), 'shape', 'gather', 'axis 2', 'rank 2')
    expectLeft(traced([f32(2, 3)], (a) => a.builder.bind('reduce_max', { axes: [1, 1] }, [a])), 'shape', 'reduce_max', 'axis 1 appears twice')
  })

  test('wrong dtype: gather indices, idiv of floats, where condition', () => {
    expectLeft(traced([f32(4, 2), f32(3)], (x, i) => x.gather(i)), 'dtype', 'gather', 'float32', 'int32')
    expectLeft(traced([f32(3), f32(3)], (a, b) => a.idiv(b)), 'dtype', 'idiv', 'float32', 'int32')
    expectLeft(traced([f32(3), i32(3)], (a, b) => a.add(b)), 'dtype', 'add', 'float32 vs int32')
    expectLeft(traced([f32(3), f32(3)], (a, b) => a.builder.bind('where', {}, [a, a, b])), 'dtype', 'where', 'condition has dtype float32')
  })

  test('reshape size mismatch names both shapes and element counts', () => {
    expectLeft(traced([f32(2, 3)], (a) => a.reshape([4, 2])), 'shape', 'reshape', '[2,3]', '(6 elements)', '[4,2]', '(8 elements)')
    expectLeft(traced([f32(2, 3)], (a) => a.reshape([4, -1])), 'shape', 'reshape', '[2,3]', '[4,-1]')
  })

  test('matmul contracted-size mismatch names both shapes and sizes', () => {
    expectLeft(traced([f32(2, 3), f32(4, 5)], (a, b) => a.matmul(b)), 'shape', 'matmul', '[2,3] has 3 columns', '[4,5] has 4 rows')
  })

  test('slice and pad parameters', () => {
    expectLeft(traced([f32(5)], (a) => a.sliceAxis(0, 2, 7)), 'shape', 'slice', '[2, 7)', '0..5')
    expectLeft(traced([f32(5)], (a) => a.sliceAxis(0, 0, 5, 0)), 'param', 'slice', 'step 0')
    expectLeft(traced([f32(5)], (a) => a.pad([-1], [0])), 'param', 'pad', '-1')
  })

  test('traceOrThrow throws the same TesseraError', () => {
    expect(() => traceOrThrow([f32(2, 3)], (a) => a.reshape([7]))).toThrow(TesseraError)
    expect(() => traceOrThrow([f32(2, 3)], (a) => a.reshape([7]))).toThrow(/reshape: cannot reshape \[2,3\]/)
  })

  test('tensors of two traces cannot be mixed', () => {
    const other = traceOrThrow([f32(2)], (a) => a)
    let leaked: Tensor | undefined
    traceOrThrow([f32(2)], (a) => (leaked = a))
    expectLeft(traced([f32(2)], (a) => a.add(leaked!)), 'input', 'add', 'different trace')
    expect(other.program.inputs.length).toBe(1)
  })
})

describe('run checks inputs before anything is compiled', () => {
  const neverCompiles: Backend = {
    name: 'never',
    caps: { exactIntLimit: 2 ** 24, strictNaN: true, maxKernelArgs: Infinity, maxTextureSize: Infinity, atol: 0, rtol: 0, transcendentalRtol: 0, fuses: false },
    compile: () => {
      throw new Error('compile must not be reached with bad inputs')
    },
  }
  const program = traceOrThrow([f32(2, 3), i32(3)], (a, i) => a.gather(i, 1)).program

  test('wrong count', async () => {
    expectLeft(await run(program, [tensorOf([1, 2, 3, 4, 5, 6], [2, 3])], neverCompiles), 'input', 'run', 'expected 2 input(s), got 1')
  })

  test('wrong shape', async () => {
    const r = await run(program, [tensorOf([1, 2, 3, 4], [2, 2]), tensorOf([0, 1, 2], [3], 'int32')], neverCompiles)
    expectLeft(r, 'input', 'run', 'input 0 is f32[2,2]', 'expected f32[2,3]')
  })

  test('wrong dtype', async () => {
    const r = await run(program, [tensorOf([1, 2, 3, 4, 5, 6], [2, 3]), tensorOf([0, 1, 2], [3])], neverCompiles)
    expectLeft(r, 'input', 'run', 'input 1 is f32[3]', 'expected i32[3]')
  })

  test('data length that does not match the shape', async () => {
    const bad = { shape: [2, 3], dtype: 'float32' as const, data: new Float32Array(5) }
    expectLeft(await run(program, [bad, tensorOf([0, 1, 2], [3], 'int32')], neverCompiles), 'input', 'run', '5 elements', '[2,3]')
  })

  test('a backend failure comes back as a Left naming the backend', async () => {
    const r = await run(program, [tensorOf([1, 2, 3, 4, 5, 6], [2, 3]), tensorOf([0, 1, 2], [3], 'int32')], neverCompiles)
    expectLeft(r, 'runtime', 'run(never)', 'compile must not be reached')
  })
})

describe('typecheck finds corrupted programs', () => {
  const good = traceOrThrow([f32(2, 3), f32(3, 4)], (a, b) => a.matmul(b).sum(1)).program

  test('a well-formed program passes', () => {
    expect(E.isRight(typecheck(good))).toBe(true)
  })

  test('an equation whose recorded output disagrees with its shape rule', () => {
    const [mm, sum] = good.eqns as [Eqn, Eqn]
    const corrupt: Eqn = { ...mm, out: { id: mm.out.id, aval: f32(2, 5) } }
    const p: Program = makeProgram(good.inputs, [corrupt, sum], good.outputs)
    expectLeft(typecheck(p), 'shape', 'typecheck', 'equation 0 (matmul)', 'records f32[2,5]', 'rule gives f32[2,4]')
  })

  test('an equation whose inputs no longer fit its primitive: the error names that primitive', () => {
    const [mm, sum] = good.eqns as [Eqn, Eqn]
    const swapped: Eqn = { ...mm, inputs: [mm.inputs[1]!, mm.inputs[0]!] }
    expectLeft(typecheck(makeProgram(good.inputs, [swapped, sum], good.outputs)), 'shape', 'matmul', '[3,4] has 4 columns', '[2,3] has 2 rows')
  })

  test('a variable used before it is defined, or defined twice', () => {
    const [mm, sum] = good.eqns as [Eqn, Eqn]
    expectLeft(typecheck(makeProgram(good.inputs, [sum, mm], good.outputs)), 'param', 'typecheck', 'equation 0 (reduce_sum)', 'before it is defined')
    expectLeft(typecheck(makeProgram(good.inputs, [mm, mm, sum], good.outputs)), 'param', 'typecheck', 'defined twice', 'equation 1')
    expectLeft(typecheck(makeProgram(good.inputs, [mm], good.outputs)), 'param', 'typecheck', 'output 0 is never defined')
  })
})
