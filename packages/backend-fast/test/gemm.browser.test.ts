import type { HostTensor, Tensor } from '@tessera/core'
import { interpretProgram, runOrThrow, tensorOf, traceOrThrow, valueAndGrad } from '@tessera/core'
import { compareOutputs, toleranceFor } from '@tessera/core/testing'
import { expect, it } from 'vitest'
import { fastBackend, fastCaps, planProgram } from '../src/index.js'

// A dense layer's forward and gradients at the demo's size in a page: the GEMM and the
// elementwise passes use an unshared WebAssembly memory, so they need no cross-origin isolation
it('a dense layer with its gradients runs on the WebAssembly GEMM in a browser page', async () => {
  const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
  const p = traceOrThrow([f32([64, 784]), f32([128, 784]), f32([128]), f32([64, 128])], (x: Tensor, w: Tensor, b: Tensor, t: Tensor) => {
    const loss = (ps: { w: Tensor; b: Tensor }, xx: Tensor, tt: Tensor) => xx.matmul(ps.w.mT).add(ps.b).relu().sub(tt).square().mean()
    const { value, grad } = valueAndGrad(loss)({ w, b }, x, t)
    // an SGD-like update of the weight: a large elementwise loop
    return [value, w.sub(grad.w.mul(0.01)), grad.b]
  }).program
  const plan = planProgram(p, { wasm: true, threads: 1 })
  expect(plan.steps.filter((s) => s.kind === 'matmul' && s.gemm !== undefined).length).toBe(2)
  expect(plan.steps.some((s) => s.kind === 'elem')).toBe(true)
  let s = 5
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0), (s / 2 ** 32) * 2 - 1)
  const ins: HostTensor[] = p.inputs.map((v) => tensorOf(Array.from({ length: v.aval.shape.reduce((a, b) => a * b, 1) }, rnd), [...v.aval.shape]))
  const abs = (h: HostTensor) => ({ ...h, data: Float32Array.from(h.data as Float32Array, Math.abs) }) as HostTensor
  const want = interpretProgram(p, ins)
  const got = await runOrThrow(p, ins, fastBackend())
  expect(compareOutputs(got, want, toleranceFor('accumulate', fastCaps), { strictNaN: true, magnitude: interpretProgram(p, ins.map(abs)) })).toBeNull()
  console.info(`crossOriginIsolated: ${String((globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated)}`)
})
