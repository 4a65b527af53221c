import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, test } from 'vitest'
import type { Aval, HostTensor, Tensor } from '../src/index.js'
import { interpretProgram, readReturnedSelections, traceOrThrow, typecheck } from '../src/index.js'

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })
const data = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 2)

/** Distances returned through a reshape and selected from, as VectorQuantize computes them. */
const distances = traceOrThrow([f32(6, 3), f32(4, 3)], (x: Tensor, c: Tensor) => {
  const d = x.square().sum(-1, true).add(c.square().sum(-1)).sub(x.matmul(c.mT).mul(2)).maximum(1e-8).sqrt().neg()
  return [d.argmax(-1), d.reshape([2, 3, 4])]
}).program

describe('readReturnedSelections', () => {
  test('the selection reads the returned reshape; outputs and their values are unchanged', () => {
    const p = readReturnedSelections(distances)
    expect(E.isRight(typecheck(p))).toBe(true)
    expect(p.outputs.map((v) => v.id)).toEqual(distances.outputs.map((v) => v.id))
    // the argmax's operand is a reshape of the returned distances, defined after them
    const argmax = p.eqns.find((e) => e.prim === 'argmax')!
    const operand = p.eqns.find((e) => e.out.id === argmax.inputs[0]!.id)!
    expect(operand.prim).toBe('reshape')
    expect(operand.inputs[0]!.id).toBe(distances.outputs[1]!.id)
    expect(p.eqns.indexOf(operand)).toBeGreaterThan(p.eqns.findIndex((e) => e.out.id === distances.outputs[1]!.id))
    const ins: HostTensor[] = [{ shape: [6, 3], dtype: 'float32', data: data(18, 1) }, { shape: [4, 3], dtype: 'float32', data: data(12, 2) }]
    const [a, b] = [interpretProgram(distances, ins), interpretProgram(p, ins)]
    a.forEach((t, i) => expect(Array.from(b[i]!.data)).toEqual(Array.from(t.data)))
  })

  test('programs without a returned and selected value are returned as they are', () => {
    const noSelect = traceOrThrow([f32(2, 3)], (x: Tensor) => [x.sqrt().reshape([3, 2]), x.sqrt().sum(-1)]).program
    expect(readReturnedSelections(noSelect)).toBe(noSelect)
    const notReturned = traceOrThrow([f32(2, 3)], (x: Tensor) => [x.sqrt().argmax(-1), x.sqrt().reshape([3, 2]).exp()]).program
    expect(readReturnedSelections(notReturned)).toBe(notReturned)
    // returned as itself: already stored, nothing to share
    const itself = traceOrThrow([f32(2, 3)], (x: Tensor) => {
      const s = x.sqrt()
      return [s.argmax(-1), s]
    }).program
    expect(readReturnedSelections(itself)).toBe(itself)
  })
})
