import { fc, test } from '@fast-check/vitest'
import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, it } from 'vitest'
import type { Aval, Tensor } from '../src/index.js'
import { adaptiveAvgPool2d, adaptiveWindows, conv2d, grad, interpretProgram, resize, tensorOf, trace, traceOrThrow, typecheck } from '../src/index.js'
import { numericGrad } from './autodiff-f64.js'
import { adaptiveAvgPoolF64, conv2dF64, resizeF64 } from './image-f64.js'

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })
const val = fc.double({ min: -2, max: 2, noNaN: true, noDefaultInfinity: true }).map(Math.fround)
const arr = (n: number) => fc.array(val, { minLength: n, maxLength: n })
const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** |got - want| <= tol·(1 + mag) elementwise, mag the same computation on |inputs| (an accumulation bound). */
function expectAccumulated(got: ArrayLike<number>, want: ArrayLike<number>, mag: ArrayLike<number>, tol: number, what: string) {
  expect(got.length, what).toBe(want.length)
  for (let i = 0; i < want.length; i++)
    if (!(Math.abs(got[i]! - want[i]!) <= tol * (1 + mag[i]!))) throw new Error(`${what}: element ${i} is ${got[i]}, want ${want[i]}`)
}

/** A conv2d configuration whose output is non-empty. */
const convArb = fc
  .record({
    b: fc.integer({ min: 1, max: 2 }), groups: fc.integer({ min: 1, max: 2 }), cg: fc.integer({ min: 1, max: 2 }), og: fc.integer({ min: 1, max: 2 }),
    h: fc.integer({ min: 1, max: 6 }), w: fc.integer({ min: 1, max: 6 }), kh: fc.integer({ min: 1, max: 3 }), kw: fc.integer({ min: 1, max: 3 }),
    sh: fc.integer({ min: 1, max: 2 }), sw: fc.integer({ min: 1, max: 2 }), ph: fc.integer({ min: 0, max: 2 }), pw: fc.integer({ min: 0, max: 2 }),
    dh: fc.integer({ min: 1, max: 2 }), dw: fc.integer({ min: 1, max: 2 }), bias: fc.boolean(),
  })
  .filter((c) => c.h + 2 * c.ph >= c.dh * (c.kh - 1) + 1 && c.w + 2 * c.pw >= c.dw * (c.kw - 1) + 1)

type ConvCase = typeof convArb extends fc.Arbitrary<infer T> ? T : never
const convShapes = (c: ConvCase) => ({ xs: [c.b, c.cg * c.groups, c.h, c.w], ws: [c.og * c.groups, c.cg, c.kh, c.kw], bs: [c.og * c.groups] })
const convSpec = (c: ConvCase) => ({ stride: [c.sh, c.sw] as const, padding: [c.ph, c.pw] as const, dilation: [c.dh, c.dw] as const, groups: c.groups })

describe('conv2d (composite)', () => {
  test.prop([convArb, fc.nat(1000)], { numRuns: 80 })('equals a direct float64 convolution', (c, seed) => {
    const { xs, ws, bs } = convShapes(c)
    const gen = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.fround(Math.sin(seed * 7 + s * 13 + i * 1.7) * 1.5))
    const x = gen(size(xs), 1), w = gen(size(ws), 2), bias = gen(bs[0]!, 3)
    const p = traceOrThrow([f32(...xs), f32(...ws), f32(...bs)], (xt, wt, bt) => conv2d(xt, wt, { ...convSpec(c), ...(c.bias ? { bias: bt } : {}) })).program
    const got = interpretProgram(p, [tensorOf(x, xs), tensorOf(w, ws), tensorOf(bias, bs)])[0]!
    const want = conv2dF64(x, xs, w, ws, c.bias ? bias : undefined, convSpec(c))
    const mag = conv2dF64(x.map(Math.abs), xs, w.map(Math.abs), ws, c.bias ? bias.map(Math.abs) : undefined, convSpec(c))
    expect(got.shape).toEqual(want.shape)
    expectAccumulated(got.data, want.data, mag.data, 1e-6, 'conv2d')
  })

  test.prop([convArb.filter((c) => size(convShapes(c).xs) <= 48 && size(convShapes(c).ws) <= 24), fc.nat(1000)], { numRuns: 25 })(
    'VJPs for input, weight and bias agree with float64 central differences',
    (c, seed) => {
      const { xs, ws, bs } = convShapes(c)
      const spec = convSpec(c)
      const probe = traceOrThrow([f32(...xs), f32(...ws)], (xt, wt) => conv2d(xt, wt, spec)).program
      const os = probe.outputs[0]!.aval.shape
      const gen = (n: number, s: number) => Array.from({ length: n }, (_, i) => Math.fround(Math.cos(seed * 3 + s * 11 + i * 0.9)))
      const ins = [tensorOf(gen(size(xs), 1), xs), tensorOf(gen(size(ws), 2), ws), tensorOf(gen(bs[0]!, 3), bs), tensorOf(gen(size(os), 4), os)]
      const p = traceOrThrow([f32(...xs), f32(...ws), f32(...bs), f32(...os)], (xt, wt, bt, r) => conv2d(xt, wt, { ...spec, bias: bt }).mul(r).sum()).program
      const gp = grad(p, [0, 1, 2])
      expect(E.isRight(typecheck(gp))).toBe(true)
      const got = interpretProgram(gp, ins).slice(1)
      const want = numericGrad(p, ins.map((t) => ({ shape: t.shape, data: Float64Array.from(t.data) })), [0, 1, 2], 1e-3)
      got.forEach((g, k) => g.data.forEach((v, i) => expect(Math.abs(v - want[k]![i]!), `input ${k} element ${i}`).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want[k]![i]!)))))
    },
  )

  const bad = (xs: number[], ws: number[], opts: Record<string, unknown> = {}, bs?: number[]) =>
    trace([f32(...xs), f32(...ws), f32(...(bs ?? [1]))], (x, w, b) => conv2d(x, w, { ...opts, ...(bs ? { bias: b } : {}) }))
  it.each<[string, E.Either<{ kind: string; where: string; message: string }, unknown>, string, RegExp]>([
    ['input rank', bad([2, 3, 4], [1, 3, 1, 1]), 'shape', /input must be \(batch, channels, height, width\), got \[2,3,4\]/],
    ['weight rank', bad([1, 3, 4, 4], [3, 3]), 'shape', /weight must be \(out_channels, in_channels \/ groups, kh, kw\), got \[3,3\]/],
    ['channels', bad([1, 3, 4, 4], [2, 2, 3, 3]), 'shape', /expects 2 input channels .* has 3/],
    ['groups divide input', bad([1, 3, 4, 4], [2, 1, 3, 3], { groups: 2 }), 'shape', /input channels 3 .* not divisible by groups 2/],
    ['groups divide output', bad([1, 4, 4, 4], [3, 2, 3, 3], { groups: 2 }), 'shape', /out channels 3 .* not divisible by groups 2/],
    ['kernel too large', bad([1, 1, 2, 2], [1, 1, 3, 3]), 'shape', /kernel 3x3 .* larger than the padded input 2x2/],
    ['stride', bad([1, 1, 4, 4], [1, 1, 3, 3], { stride: 0 }), 'param', /stride 0 must be an integer >= 1/],
    ['padding', bad([1, 1, 4, 4], [1, 1, 3, 3], { padding: [1, -1] }), 'param', /padding \[1,-1\]/],
    ['groups', bad([1, 1, 4, 4], [1, 1, 3, 3], { groups: 1.5 }), 'param', /groups 1.5 must be a positive integer/],
    ['bias', bad([1, 1, 4, 4], [2, 1, 3, 3], {}, [3]), 'shape', /bias must be float32 \(2\), got float32\[3\]/],
  ])('refuses %s with an error naming it', (_name, r, kind, msg) => {
    if (E.isRight(r)) throw new Error('expected a Left')
    expect(r.left.kind).toBe(kind)
    expect(r.left.where).toBe('conv2d')
    expect(r.left.message).toMatch(msg)
  })
})

const sizes = fc.record({ b: fc.integer({ min: 1, max: 2 }), c: fc.integer({ min: 1, max: 2 }), h: fc.integer({ min: 1, max: 7 }), w: fc.integer({ min: 1, max: 7 }), oh: fc.integer({ min: 1, max: 9 }), ow: fc.integer({ min: 1, max: 9 }) })
const modeArb = fc.constantFrom(['bilinear', false] as const, ['bilinear', true] as const, ['nearest', false] as const)

describe('resize (composite F.interpolate)', () => {
  test.prop([sizes, modeArb, fc.nat(1000)], { numRuns: 120 })('equals a direct float64 interpolation with torch\'s index mapping', (s, [mode, ac], seed) => {
    const xs = [s.b, s.c, s.h, s.w]
    const x = Array.from({ length: size(xs) }, (_, i) => Math.fround(Math.sin(seed + i * 2.3) * 2))
    const p = traceOrThrow([f32(...xs)], (xt) => resize(xt, [s.oh, s.ow], { mode, alignCorners: ac })).program
    const got = interpretProgram(p, [tensorOf(x, xs)])[0]!
    const want = resizeF64(x, xs, [s.oh, s.ow], mode, ac)
    expect(got.shape).toEqual(want.shape)
    expectAccumulated(got.data, want.data, resizeF64(x.map(Math.abs), xs, [s.oh, s.ow], mode, ac).data, 2e-7, `resize ${mode}`)
  })

  it('matches torch on known values: bilinear 2 -> 4 is [a, .75a+.25b, .25a+.75b, b]; align_corners 2 -> 3 is [a, (a+b)/2, b]; nearest 3 -> 2 is [a, b]', () => {
    const run = (x: number[], w: number, mode: 'bilinear' | 'nearest', ac = false) =>
      Array.from(interpretProgram(traceOrThrow([f32(1, 1, 1, x.length)], (t) => resize(t, [1, w], { mode, alignCorners: ac })).program, [tensorOf(x, [1, 1, 1, x.length])])[0]!.data)
    expect(run([1, 5], 4, 'bilinear')).toEqual([1, 2, 4, 5])
    expect(run([1, 5], 3, 'bilinear', true)).toEqual([1, 3, 5])
    expect(run([1, 5, 9], 2, 'nearest')).toEqual([1, 5])
    expect(run([1, 5, 9], 7, 'nearest')).toEqual([1, 1, 1, 5, 5, 9, 9])
  })

  test.prop([sizes.filter((s) => s.b * s.c * s.h * s.w <= 24), modeArb, fc.nat(1000)], { numRuns: 30 })('VJP agrees with float64 central differences', (s, [mode, ac], seed) => {
    const xs = [s.b, s.c, s.h, s.w], os = [s.b, s.c, s.oh, s.ow]
    const p = traceOrThrow([f32(...xs), f32(...os)], (xt, r) => resize(xt, [s.oh, s.ow], { mode, alignCorners: ac }).mul(r).sum()).program
    const ins = [tensorOf(Array.from({ length: size(xs) }, (_, i) => Math.fround(Math.sin(seed + i))), xs), tensorOf(Array.from({ length: size(os) }, (_, i) => Math.fround(Math.cos(seed + i))), os)]
    const got = interpretProgram(grad(p, [0]), ins)[1]!
    const want = numericGrad(p, ins.map((t) => ({ shape: t.shape, data: Float64Array.from(t.data) })), [0], 1e-3)[0]!
    got.data.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want[i]!))))
  })

  it.each<[string, () => unknown, string, RegExp]>([
    ['rank', () => resize(traceInput([2, 3, 4]), [2, 2]), 'shape', /\(batch, channels, height, width\), got \[2,3,4\]/],
    ['size', () => resize(traceInput([1, 1, 2, 2]), [0, 2]), 'param', /size \[0,2\] must be two positive integers/],
    ['mode', () => resize(traceInput([1, 1, 2, 2]), [2, 2], { mode: 'bicubic' as 'nearest' }), 'param', /mode "bicubic" is not supported/],
    ['align corners with nearest', () => resize(traceInput([1, 1, 2, 2]), [2, 2], { mode: 'nearest', alignCorners: true }), 'param', /alignCorners applies to bilinear only/],
    ['dtype', () => resize(traceInput([1, 1, 2, 2], 'int32'), [2, 2]), 'dtype', /expected float32/],
  ])('refuses a bad %s', (_n, f, kind, msg) => expectThrows(f, kind, 'resize', msg))
})

describe('adaptiveAvgPool2d (composite)', () => {
  it('windows are torch\'s: [floor(i·in/out), ceil((i+1)·in/out))', () => {
    expect(adaptiveWindows(5, 3)).toEqual({ start: [0, 1, 3], end: [2, 4, 5] })
    expect(adaptiveWindows(2, 4)).toEqual({ start: [0, 0, 1, 1], end: [1, 1, 2, 2] })
  })

  test.prop([sizes, fc.nat(1000)], { numRuns: 120 })('equals direct float64 window means', (s, seed) => {
    const xs = [s.b, s.c, s.h, s.w]
    const x = Array.from({ length: size(xs) }, (_, i) => Math.fround(Math.sin(seed + i * 1.3) * 2))
    const p = traceOrThrow([f32(...xs)], (xt) => adaptiveAvgPool2d(xt, [s.oh, s.ow])).program
    const got = interpretProgram(p, [tensorOf(x, xs)])[0]!
    const want = adaptiveAvgPoolF64(x, xs, [s.oh, s.ow])
    expect(got.shape).toEqual(want.shape)
    expectAccumulated(got.data, want.data, adaptiveAvgPoolF64(x.map(Math.abs), xs, [s.oh, s.ow]).data, 1e-6, 'adaptiveAvgPool2d')
  })

  test.prop([sizes.filter((s) => s.b * s.c * s.h * s.w <= 24), fc.nat(1000)], { numRuns: 30 })('VJP agrees with float64 central differences', (s, seed) => {
    const xs = [s.b, s.c, s.h, s.w], os = [s.b, s.c, s.oh, s.ow]
    const p = traceOrThrow([f32(...xs), f32(...os)], (xt, r) => adaptiveAvgPool2d(xt, [s.oh, s.ow]).mul(r).sum()).program
    const ins = [tensorOf(Array.from({ length: size(xs) }, (_, i) => Math.fround(Math.sin(seed + i))), xs), tensorOf(Array.from({ length: size(os) }, (_, i) => Math.fround(Math.cos(seed + i))), os)]
    const got = interpretProgram(grad(p, [0]), ins)[1]!
    const want = numericGrad(p, ins.map((t) => ({ shape: t.shape, data: Float64Array.from(t.data) })), [0], 1e-3)[0]!
    got.data.forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(want[i]!))))
  })

  it.each<[string, () => unknown, string, RegExp]>([
    ['rank', () => adaptiveAvgPool2d(traceInput([2, 3]), [1, 1]), 'shape', /\(batch, channels, height, width\), got \[2,3\]/],
    ['size', () => adaptiveAvgPool2d(traceInput([1, 1, 2, 2]), [1, 1.5] as unknown as [number, number]), 'param', /size \[1,1.5\]/],
  ])('refuses a bad %s', (_n, f, kind, msg) => expectThrows(f, kind, 'adaptiveAvgPool2d', msg))
})

/** A symbolic input of a fresh trace (the error tests need a Tensor, not a program). */
function traceInput(shape: number[], dtype: 'float32' | 'int32' = 'float32'): Tensor {
  let t: Tensor | undefined
  traceOrThrow([{ shape, dtype }], (x) => ((t = x), x))
  return t!
}

function expectThrows(f: () => unknown, kind: string, where: string, msg: RegExp) {
  try {
    f()
  } catch (e) {
    const err = e as { kind: string; where: string; message: string }
    expect(err.kind).toBe(kind)
    expect(err.where).toBe(where)
    expect(err.message).toMatch(msg)
    return
  }
  throw new Error('expected an error')
}
