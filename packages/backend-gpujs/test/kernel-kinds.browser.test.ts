// One compiled program may hold two kernels with the same source and sizes whose argument is a
// host array in one and a device result in the other; they must not share one gpu.js kernel.
import { expect, it } from 'vitest'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { gpuJsBackend, gpuJsUnavailable } from '../src/index.js'
import type { GpuJsMode } from '../src/index.js'

// m @ m reads m = x @ x^T (a device result), then y @ y reads the input y (a host array): one
// kernel source, its first call fed from the device
const program = traceOrThrow([{ shape: [2, 3], dtype: 'float32' as const }, { shape: [2, 2], dtype: 'float32' as const }], (x: Tensor, y: Tensor) => {
  const m = x.matmul(x.mT)
  return [m.matmul(m), y.matmul(y)]
}).program
const square = (a: readonly number[]) => [a[0]! * a[0]! + a[1]! * a[2]!, a[0]! * a[1]! + a[1]! * a[3]!, a[2]! * a[0]! + a[3]! * a[2]!, a[2]! * a[1]! + a[3]! * a[3]!]
const xs = [0.5, -1, 0.25, 2, 1.5, -0.5]
const ys = [1, 0.5, -0.75, 0.25]
const dot = (i: number, j: number) => xs[3 * i]! * xs[3 * j]! + xs[3 * i + 1]! * xs[3 * j + 1]! + xs[3 * i + 2]! * xs[3 * j + 2]!
const m2 = square([dot(0, 0), dot(0, 1), dot(1, 0), dot(1, 1)])
const y2 = square(ys)

for (const mode of ['webgl2', 'webgpu'] as GpuJsMode[])
  it(`gpujs ${mode}: the same kernel over a host input and over a device result`, async (ctx) => {
    const why = await gpuJsUnavailable(mode)
    if (why) {
      console.warn(`kernel kinds ${mode}: skipped: ${why}`)
      ctx.skip()
    }
    const be = gpuJsBackend(mode)
    try {
      const exe = be.compile(program)
      for (let call = 0; call < 2; call++) {
        const [a, b] = await exe.run([tensorOf(xs, [2, 3]), tensorOf(ys, [2, 2])])
        Array.from(a!.data).forEach((v, i) => expect(v).toBeCloseTo(m2[i]!, 5))
        Array.from(b!.data).forEach((v, i) => expect(v).toBeCloseTo(y2[i]!, 5))
      }
    } finally {
      await be.dispose()
    }
  })
