import { describe, expect, it } from 'vitest'
import type { Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow } from '@tessera/core'
import { gpuJsBackend, gpuJsUnavailable } from '../src/index.js'
import type { GpuJsMode } from '../src/index.js'

const CALLS = Number(process.env.TESSERA_MEMORY_CALLS ?? 10_000)

// nearest-code search: three kernels, two intermediate textures per call
const program = traceOrThrow(
  [{ shape: [16, 8], dtype: 'float32' as const }, { shape: [32, 8], dtype: 'float32' as const }],
  (x: Tensor, cb: Tensor) => {
    const d = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1).expandDims(0))
    const ind = d.argmin(-1)
    return [ind, cb.gather(ind, 0)]
  },
).program

const x = tensorOf(Array.from({ length: 128 }, (_, i) => Math.sin(i)), [16, 8])
const cb = tensorOf(Array.from({ length: 256 }, (_, i) => Math.cos(i * 0.7)), [32, 8])

describe.each(['headlessgl', 'webasm', 'cpu'] as GpuJsMode[])('warm calls on gpujs %s', (mode) => {
  it(`${CALLS} warm calls keep live textures and memory flat`, async (ctx) => {
    const why = await gpuJsUnavailable(mode)
    if (why) {
      console.warn(`memory ${mode}: skipped: ${why}`)
      ctx.skip()
    }
    const be = gpuJsBackend(mode)
    // count GL textures at the context level too (gpu.js's own, not only ours)
    let glLive = 0
    let glHooked = false
    const exe = be.compile(program)
    try {
      const first = await exe.run([x, cb])
      const gl = (be.gpu as { context?: Record<string, unknown> }).context
      if (gl && typeof gl.createTexture === 'function') {
        const create = (gl.createTexture as () => unknown).bind(gl)
        const del = (gl.deleteTexture as (t: unknown) => void).bind(gl)
        gl.createTexture = () => (glLive++, create())
        gl.deleteTexture = (t: unknown) => (glLive--, del(t))
        glHooked = true
      }
      for (let i = 0; i < 200; i++) await exe.run([x, cb])
      global.gc?.()
      const rss0 = process.memoryUsage().rss
      const heap0 = process.memoryUsage().heapUsed
      const gl0 = glLive
      for (let i = 0; i < CALLS; i++) {
        const out = await exe.run([x, cb])
        if (i === CALLS - 1) expect(Array.from(out[0]!.data)).toEqual(Array.from(first[0]!.data))
      }
      global.gc?.()
      const rss1 = process.memoryUsage().rss
      const heap1 = process.memoryUsage().heapUsed
      const s = be.stats()
      console.log(
        `memory ${mode}: ${CALLS} calls, GL context instrumented: ${gl0 !== undefined && glHooked}, ${s.kernelCalls} kernel calls, live device values ${s.liveDeviceValues}, ` +
          `GL textures created-deleted during the calls ${glLive - gl0}, rss ${(rss0 / 2 ** 20).toFixed(1)} -> ${(rss1 / 2 ** 20).toFixed(1)} MiB, ` +
          `heap ${(heap0 / 2 ** 20).toFixed(1)} -> ${(heap1 / 2 ** 20).toFixed(1)} MiB`,
      )
      expect(s.liveDeviceValues).toBe(0)
      expect(glLive - gl0).toBeLessThanOrEqual(0)
      expect(rss1 - rss0).toBeLessThan(64 * 2 ** 20)
    } finally {
      exe.dispose()
      be.dispose()
    }
  })
})
