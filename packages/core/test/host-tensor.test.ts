import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import { TesseraError, checkHostTensor, hostTensor, run, tensorOf, traceOrThrow } from '../src/index.js'
import { interpretProgram, referenceCaps } from '../src/index.js'

const leftOf = <A>(r: E.Either<TesseraError, A>): TesseraError => {
  if (E.isRight(r)) throw new Error('expected a Left')
  return r.left
}

describe('hostTensor infers the dtype from the typed-array class and checks a given one (issue 15)', () => {
  test('float classes are float32, integer classes int32, Uint8Array bool', () => {
    const f64 = tensorOf(new Float64Array([1.5, -2]), [2])
    expect(f64.dtype).toBe('float32')
    expect(f64.data).toBeInstanceOf(Float32Array)
    expect(Array.from(f64.data)).toEqual([1.5, -2])
    const i16 = tensorOf(new Int16Array([3, -4]), [2])
    expect(i16.dtype).toBe('int32')
    expect(Array.from(i16.data)).toEqual([3, -4])
    expect(tensorOf(new Uint8Array([0, 1]), [2]).dtype).toBe('bool')
    expect(tensorOf([0.5], [1]).dtype).toBe('float32')
  })
  test('Uint8Array with bytes above 1 is not silently a bool', () => {
    expect(leftOf(hostTensor(new Uint8Array([0, 7]), [2])).message).toContain("element 1 = 7 is not 0 or 1")
    expect(Array.from(tensorOf(new Uint8Array([0, 7]), [2], 'int32').data)).toEqual([0, 7])
  })
  test('int32 values out of range or non-integer are refused, never wrapped', () => {
    expect(leftOf(hostTensor([2 ** 40], [1], 'int32')).message).toContain('element 0 = 1099511627776')
    expect(leftOf(hostTensor([1.5], [1], 'int32')).kind).toBe('dtype')
    expect(leftOf(hostTensor(new Float32Array([NaN]), [1], 'int32')).message).toContain('NaN')
    expect(leftOf(hostTensor(new Float64Array([2 ** 31]), [1], 'int32')).kind).toBe('dtype')
    expect(Array.from(tensorOf([-(2 ** 31), 2 ** 31 - 1], [2], 'int32').data)).toEqual([-(2 ** 31), 2 ** 31 - 1])
  })
  test('bool accepts 0/1 and booleans only', () => {
    expect(leftOf(hostTensor([2], [1], 'bool')).kind).toBe('dtype')
    expect(Array.from(tensorOf([true, false] as unknown as number[], [2], 'bool').data)).toEqual([1, 0])
  })
  test('bad shapes, bad dtypes and non-arrays are Lefts', () => {
    expect(leftOf(hostTensor([1, 2], [-2])).message).toContain('non-negative integers')
    expect(leftOf(hostTensor([1, 2], [1.5])).kind).toBe('input')
    expect(leftOf(hostTensor([1, 2], [NaN])).message).toContain('NaN')
    expect(leftOf(hostTensor([1, 2], [3])).message).toContain('needs 3')
    expect(leftOf(hostTensor([1], [1], 'float64' as never)).kind).toBe('dtype')
    expect(leftOf(hostTensor(null as never, [1])).message).toContain('got null')
    expect(leftOf(hostTensor(['a'] as never, [1])).message).toContain('not a number')
    expect(leftOf(hostTensor(new BigInt64Array(1) as never, [1])).kind).toBe('dtype')
    expect(leftOf(hostTensor(new DataView(new ArrayBuffer(4)) as never, [1])).kind).toBe('input')
  })
})

describe('checkHostTensor and run name a bad argument', () => {
  test('plain arrays, null and mislabelled data are Lefts naming the argument', () => {
    expect(leftOf(checkHostTensor([1, 2], 'x', 'f')).message).toBe('f: x must be a host tensor { shape, dtype, data } (tensorOf / hostTensor), got a plain array of length 2')
    expect(leftOf(checkHostTensor(null, 'x', 'f')).message).toContain('got null')
    expect(leftOf(checkHostTensor({ shape: [1], dtype: 'int32', data: new Float32Array(1) }, 'x', 'f')).message).toContain('Float32Array data for dtype int32')
    expect(leftOf(checkHostTensor({ shape: [2], dtype: 'float32', data: new Float32Array(1) }, 'x', 'f')).message).toContain('1 elements for shape [2]')
  })
  test('run refuses a mislabelled input before compiling', async () => {
    const p = traceOrThrow([{ shape: [1], dtype: 'int32' as const }], (a) => a.add(1)).program
    const backend = { name: 'ref', caps: referenceCaps, compile: (prog: typeof p) => ({ run: async (xs: readonly never[]) => interpretProgram(prog, xs), dispose() {} }) }
    const r = await run(p, [{ shape: [1], dtype: 'int32', data: new Float32Array([1]) as never }], backend as never)
    expect(leftOf(r).message).toContain('input 0 has Float32Array data for dtype int32')
  })
})

describe('run refuses inputs that are not an array', () => {
  test('null or an object is a Left, not a TypeError', async () => {
    const p = traceOrThrow([{ shape: [1], dtype: 'float32' as const }], (a) => a.add(1)).program
    const backend = { name: 'ref', caps: referenceCaps, compile: (prog: typeof p) => ({ run: async (xs: readonly never[]) => interpretProgram(prog, xs), dispose() {} }) }
    for (const bad of [null, {}, 'x'])
      expect(leftOf(await run(p, bad as never, backend as never)).message).toContain('inputs must be an array of host tensors')
  })
})

describe('trace refuses avals with impossible shapes', () => {
  test('a negative or NaN size is a Left, not a program', async () => {
    const { trace } = await import('../src/index.js')
    for (const shape of [[-1], [NaN], [1.5]]) expect(E.isLeft(trace([{ shape, dtype: 'float32' }] as never, ((a: unknown) => a) as never))).toBe(true)
  })
})
