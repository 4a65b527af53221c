import { describe, expect, it } from 'vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Aval, Tensor } from '@tessera/core'
import { grad, random, tensorOf, traceOrThrow } from '@tessera/core'
import { activations, fans, gelu, initLinear, kaimingUniform, linear, mlp, relu, silu, xavierUniform } from '../src/index.js'

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })
const evalUnary = (f: (x: Tensor) => Tensor, xs: number[]) => {
  const p = traceOrThrow([f32(xs.length)], f).program
  return Array.from(interpretProgram(p, [tensorOf(xs, [xs.length])])[0]!.data)
}
const xs = [-3, -1.5, -0.25, 0, 0.3, 1, 2.5]

describe('activations', () => {
  it('gelu (tanh approximation) matches the float64 formula', () => {
    const want = xs.map((x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))))
    evalUnary(gelu, xs).forEach((v, i) => expect(v).toBeCloseTo(want[i]!, 6))
  })
  it('silu is x * sigmoid(x)', () => {
    evalUnary(silu, xs).forEach((v, i) => expect(v).toBeCloseTo(xs[i]! / (1 + Math.exp(-xs[i]!)), 6))
  })
  it('relu has gradient 0 at 0 (torch convention)', () => {
    const p = traceOrThrow([f32(3)], (x) => relu(x).sum()).program
    expect(Array.from(interpretProgram(grad(p), [tensorOf([-1, 0, 2], [3])])[1]!.data)).toEqual([0, 0, 1])
  })
  it('the table names every activation', () => {
    expect(Object.keys(activations).sort()).toEqual(['gelu', 'identity', 'relu', 'sigmoid', 'silu', 'tanh'])
  })
})

describe('init', () => {
  it('kaiming uniform (relu gain) stays inside sqrt(6 / fan_in) and has its variance', () => {
    const w = kaimingUniform(random.keyFromSeed(1), [256, 100])
    const bound = Math.sqrt(6 / 100)
    const d = Array.from(w.data)
    expect(Math.max(...d.map(Math.abs))).toBeLessThanOrEqual(bound)
    const variance = d.reduce((a, v) => a + v * v, 0) / d.length
    expect(variance).toBeCloseTo((bound * bound) / 3, 3)
  })
  it('xavier uniform bound', () => {
    const w = xavierUniform(random.keyFromSeed(2), [30, 50])
    expect(Math.max(...Array.from(w.data, Math.abs))).toBeLessThanOrEqual(Math.sqrt(6 / 80))
    expect(Math.max(...Array.from(w.data, Math.abs))).toBeGreaterThan(0.9 * Math.sqrt(6 / 80))
  })
  it('the same key gives the same weights; another key others', () => {
    const a = initLinear(random.keyFromSeed(3), 4, 5)
    const b = initLinear(random.keyFromSeed(3), 4, 5)
    const c = initLinear(random.keyFromSeed(4), 4, 5)
    expect(a.weight!.data).toEqual(b.weight!.data)
    expect(a.weight!.data).not.toEqual(c.weight!.data)
  })
  it('fans of a conv-shaped weight', () => {
    expect(fans([8, 3, 5, 5])).toEqual({ fanIn: 75, fanOut: 200 })
    expect(() => fans([8])).toThrow(/rank >= 2/)
  })
})

describe('layers', () => {
  it('linear is x Wᵀ + b', () => {
    const p = traceOrThrow([f32(2, 3), f32(2, 3), f32(2)], (x, w, b) =>
      linear(x, { weight: w, bias: b }),
    ).program
    const out = interpretProgram(p, [tensorOf([1, 2, 3, 4, 5, 6], [2, 3]), tensorOf([1, 0, -1, 0.5, 0.5, 0.5], [2, 3]), tensorOf([10, 20], [2])])[0]!
    expect(Array.from(out.data)).toEqual([8, 23, 8, 27.5])
  })
  it('linear names the mismatch', () => {
    expect(() => traceOrThrow([f32(2, 4), f32(2, 3)], (x, w) => linear(x, { weight: w }))).toThrow(
      /linear: input \[2,4\] has last dimension 4; the weight expects 3/,
    )
  })
  it('an MLP has named parameters and maps [b, in] -> [b, out]', () => {
    const net = mlp([5, 7, 3], 'gelu')
    const params = net.init(random.keyFromSeed(5))
    expect(Object.keys(params)).toEqual(['0.weight', '0.bias', '1.weight', '1.bias'])
    expect(Object.fromEntries(Object.entries(params).map(([k, v]) => [k, v.shape]))).toEqual(
      Object.fromEntries(Object.entries(net.specs()).map(([k, v]) => [k, v.shape])),
    )
    const p = traceOrThrow([net.specs(), f32(4, 5)], (ps, x) => net.apply(ps as Record<string, Tensor>, x as Tensor)).program
    expect(p.outputs[0]!.aval.shape).toEqual([4, 3])
  })
})
