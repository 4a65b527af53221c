// Toolchain smoke test: gpu.js headless-gl (node) kernel. Needs an X display (scripts/test.mjs wraps xvfb-run).
import { describe, expect, it } from 'vitest'
import { GPU } from 'gpu.js'

const supported = GPU.isHeadlessGLSupported
if (!supported) {
  console.warn(
    'smoke: skipping headlessgl test: GPU.isHeadlessGLSupported is false ' +
      `(DISPLAY=${process.env.DISPLAY ?? '<unset>'}; is gl built and is X/xvfb available?)`,
  )
}

describe('gpu.js headlessgl smoke', () => {
  it.skipIf(!supported)('adds two vectors on headlessgl', () => {
    const gpu = new GPU({ mode: 'headlessgl' })
    try {
      const kernel = gpu
        .createKernel(function (this: { thread: { x: number } }, a: number[], b: number[]) {
          return a[this.thread.x] + b[this.thread.x]
        })
        .setOutput([4])
      const out = kernel([1, 2, 3, 4], [10, 20, 30, 40]) as Float32Array
      expect(Array.from(out)).toEqual([11, 22, 33, 44])
    } finally {
      gpu.destroy()
    }
  })
})
