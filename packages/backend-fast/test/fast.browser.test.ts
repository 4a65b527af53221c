import { describeConformance } from '@tessera/core/testing'
import { expect, it } from 'vitest'
import { fastBackend } from '../src/index.js'

// backend-fast in a browser (headless Chromium): generated loops and WebAssembly SIMD kernels,
// on one thread (worker threads are Node's here; the backend says so in its name and fallback note)
it('runs on one thread in a browser and says why', () => {
  const b = fastBackend({ threads: 4 })
  expect(b.name).toContain('(1t)')
  expect((b as { threadsNote?: string }).threadsNote).toMatch(/worker threads/)
})

describeConformance('fast (browser)', async () => fastBackend(), { numRuns: 12 })
describeConformance('fast-js (browser)', async () => fastBackend({ wasm: false }), { numRuns: 8 })
