// The Either helpers core re-exports so users need no direct fp-ts dependency.
import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import { getOrThrow, isLeft, isRight, TesseraError } from '../src/index.js'

describe('Either helpers', () => {
  test('isLeft / isRight agree with fp-ts', () => {
    expect(isLeft(E.left(1))).toBe(true)
    expect(isRight(E.left(1))).toBe(false)
    expect(isRight(E.right(1))).toBe(true)
  })
  test('getOrThrow returns a Right and throws a Left as is when it is an Error', () => {
    expect(getOrThrow(E.right(3))).toBe(3)
    const err = new TesseraError('config', 'FSQ.levels', 'bad')
    expect(() => getOrThrow(E.left(err))).toThrow(err)
    expect(() => getOrThrow(E.left('plain'))).toThrow(/^plain$/)
  })
})
