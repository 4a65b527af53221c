// Toolchain smoke test: gpu.js webgl2 kernel in headless Chromium (vitest browser mode).
import { expect, it } from 'vitest'
import { GPU } from 'gpu.js'

it('runs a webgl2 kernel in the browser', () => {
  expect(GPU.isWebGL2Supported).toBe(true)
  const gpu = new GPU({ mode: 'webgl2' })
  try {
    const kernel = gpu
      .createKernel(function (this: { thread: { x: number } }, a: number[], b: number[]) {
        return a[this.thread.x] * b[this.thread.x] + 1
      })
      .setOutput([4])
    const out = kernel([1, 2, 3, 4], [10, 20, 30, 40]) as Float32Array
    expect(Array.from(out)).toEqual([11, 41, 91, 161])
  } finally {
    gpu.destroy()
  }
})
