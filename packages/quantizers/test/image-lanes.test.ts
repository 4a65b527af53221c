import { expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, Caps, HostTensor, Tensor } from '@tessera/core'
import { adaptiveAvgPool2d, conv2d, grad, resize, run, tensorOf, traceOrThrow } from '@tessera/core'
import type { Conv2dSpec } from '../../core/test/image-f64.js'
import { adaptiveAvgPoolF64, conv2dF64, resizeF64 } from '../../core/test/image-f64.js'
import { describeLanes, gpuJsLane } from './lanes.js'
import { nodeLanes } from './zoo.js'

/**
 * The composite image operations (core's conv2d, resize, adaptiveAvgPool2d) and their gradients
 * on every backend, against direct float64 implementations written from torch's definitions: the
 * composites are ordinary IR programs, so this checks that each backend runs the programs they
 * build (strided slices of a padded input, 5-d transposes, gathers with constant indices).
 */

const f32 = (...shape: number[]) => ({ shape, dtype: 'float32' as const })
const size = (s: readonly number[]) => s.reduce((a, b) => a * b, 1)
const data = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.fround(Math.sin(seed * 1.3 + i * 0.77) * 1.5))

interface ConvCase { readonly xs: number[]; readonly ws: number[]; readonly spec: Conv2dSpec; readonly bias: boolean }
const convCases: ConvCase[] = [
  // HierarchicalVQ's phi: 3x3, padding 1, bias
  { xs: [2, 4, 4, 4], ws: [4, 4, 3, 3], spec: { stride: [1, 1], padding: [1, 1], dilation: [1, 1], groups: 1 }, bias: true },
  { xs: [1, 4, 7, 6], ws: [6, 2, 3, 2], spec: { stride: [2, 1], padding: [2, 1], dilation: [1, 2], groups: 2 }, bias: false },
  { xs: [2, 3, 5, 5], ws: [2, 3, 1, 1], spec: { stride: [2, 2], padding: [0, 0], dilation: [1, 1], groups: 1 }, bias: true },
]
type Mode = ['bilinear' | 'nearest', boolean]
const resizeCases: [number[], [number, number], Mode][] = [
  [[2, 4, 1, 1], [4, 4], ['bilinear', false]],
  [[2, 4, 2, 2], [4, 4], ['bilinear', false]],
  [[1, 2, 3, 5], [7, 2], ['bilinear', false]],
  [[1, 2, 6, 4], [3, 9], ['bilinear', true]],
  [[1, 2, 3, 5], [7, 3], ['nearest', false]],
]
const poolCases: [number[], [number, number]][] = [
  [[2, 4, 4, 4], [1, 1]],
  [[2, 4, 4, 4], [2, 2]],
  [[1, 2, 5, 7], [3, 2]],
  [[1, 2, 3, 2], [5, 4]],
]

/** Every case's output, in one program, so a lane compiles once. */
function forward(ins: readonly Tensor[]): Tensor[] {
  const outs: Tensor[] = []
  let k = 0
  for (const c of convCases) {
    const x = ins[k++]!, w = ins[k++]!, b = ins[k++]!
    outs.push(conv2d(x, w, { ...c.spec, ...(c.bias ? { bias: b } : {}) }))
  }
  for (const [, to, [mode, ac]] of resizeCases) outs.push(resize(ins[k++]!, to, { mode, alignCorners: ac }))
  for (const [, to] of poolCases) outs.push(adaptiveAvgPool2d(ins[k++]!, to))
  return outs
}
const inShapes: number[][] = [
  ...convCases.flatMap((c) => [c.xs, c.ws, [c.ws[0]!]]),
  ...resizeCases.map((c) => c[0]),
  ...poolCases.map((c) => c[0]),
]
const inputs: HostTensor[] = inShapes.map((s, i) => tensorOf(data(size(s), i + 1), s))

/** The direct float64 results, in `forward`'s order, for inputs `xs` (flat arrays). */
function direct(xs: readonly ArrayLike<number>[]): Float64Array[] {
  const out: Float64Array[] = []
  let k = 0
  for (const c of convCases) {
    const x = xs[k++]!, w = xs[k++]!, b = xs[k++]!
    out.push(conv2dF64(x, c.xs, w, c.ws, c.bias ? b : undefined, c.spec).data)
  }
  for (const [s, to, [mode, ac]] of resizeCases) out.push(resizeF64(xs[k++]!, s, to, mode, ac).data)
  for (const [s, to] of poolCases) out.push(adaptiveAvgPoolF64(xs[k++]!, s, to).data)
  return out
}

const forwardProgram = traceOrThrow(inShapes.map((s) => f32(...s)), (...ins: Tensor[]) => forward(ins)).program
const outShapes = forwardProgram.outputs.map((v) => [...v.aval.shape])
const cotangents = outShapes.map((s, i) => tensorOf(data(size(s), 100 + i), s))
/** Σ_k sum(r_k · out_k): its gradient is every operation's VJP applied to r_k. */
const gradProgram = grad(
  traceOrThrow([...inShapes, ...outShapes].map((s) => f32(...s)), (...ins: Tensor[]) => {
    const outs = forward(ins.slice(0, inShapes.length))
    return outs.map((o, i) => o.mul(ins[inShapes.length + i]!).sum()).reduce((a, b) => a.add(b))
  }).program,
  inShapes.map((_, i) => i),
)

/**
 * The exact gradient of the linear objective, in float64: d/d in_j [i] = Σ_k r_k · ∂out_k/∂in_j[i],
 * each operation being linear in each input (bilinear for conv2d in x and w): a difference of two
 * direct evaluations with in_j[i] moved by 1.
 */
function directGradients(): Float64Array[] {
  const base = inputs.map((t) => Float64Array.from(t.data))
  const objective = (xs: Float64Array[]) => direct(xs).reduce((s, o, k) => s + o.reduce((a, v, i) => a + v * cotangents[k]!.data[i]!, 0), 0)
  const f0 = objective(base)
  return base.map((x, j) => {
    const g = new Float64Array(x.length)
    for (let i = 0; i < x.length; i++) {
      const moved = base.map((t, jj) => (jj === j ? Float64Array.from(t, (v, ii) => (ii === i ? v + 1 : v)) : t))
      g[i] = objective(moved) - f0
    }
    return g
  })
}

/** Elementwise |got - want| <= tol·(1 + |want|), tol from the backend's caps (64 operations' worth, at least 1e-6). */
function expectClose(got: ArrayLike<number>, want: ArrayLike<number>, caps: Caps, what: string) {
  const tol = Math.max(1e-6, 64 * (caps.atol + caps.rtol))
  expect(got.length, what).toBe(want.length)
  for (let i = 0; i < want.length; i++)
    if (!(Math.abs(got[i]! - want[i]!) <= tol * (1 + Math.abs(want[i]!)))) throw new Error(`${what}: element ${i} is ${got[i]}, want ${want[i]} (tol ${tol})`)
}

const caseNames = [
  ...convCases.map((c, i) => `conv2d#${i} ${JSON.stringify(c.ws)}`),
  ...resizeCases.map(([s, to, m]) => `resize ${m.join('/')} ${s.slice(2)}->${to}`),
  ...poolCases.map(([s, to]) => `adaptiveAvgPool2d ${s.slice(2)}->${to}`),
]

describeLanes('image-lanes', [...nodeLanes, gpuJsLane('headlessgl')], (l) => `image operations on ${l.name}`, (backend: Backend) => {
  it('conv2d, resize and adaptiveAvgPool2d equal direct float64 implementations', async () => {
    const r = await run(forwardProgram, inputs, backend)
    if (E.isLeft(r)) throw r.left
    const want = direct(inputs.map((t) => t.data))
    r.right.forEach((o, k) => {
      expect(o.shape, caseNames[k]).toEqual(outShapes[k])
      expectClose(o.data, want[k]!, backend.caps, caseNames[k]!)
    })
  })

  it('their gradients (input, weight and bias of conv2d) equal the float64 gradients', async () => {
    const r = await run(gradProgram, [...inputs, ...cotangents], backend)
    if (E.isLeft(r)) throw r.left
    const want = directGradients()
    r.right.slice(1).forEach((g, j) => expectClose(g.data, want[j]!, backend.caps, `gradient of input ${j} ${JSON.stringify(inShapes[j])}`))
  })
})
