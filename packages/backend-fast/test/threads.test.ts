import { describe, expect, it } from 'vitest'
import { Code, I32, assemble } from '../src/wasm/asm.js'
import { KernelThreads } from '../src/wasm/threads.js'

/** `run(a0, a1, a2, a3)`: a1 turns of a loop that writes memory (so it is not optimized away), then the int32 at byte a2 plus one. */
function countingKernel(): Code {
  const c = new Code(4)
  const i = c.local(I32)
  c.i32(0).set(i)
  c.block()
  c.loop()
  c.get(i).get(1).i32LtU().i32Eqz().brIf(1)
  c.i32(16).get(i).i32Store(0)
  c.get(i).i32(1).i32Add().set(i)
  c.br(0)
  c.end()
  c.end()
  c.get(2).get(2).i32Load(0).i32(1).i32Add().i32Store(0)
  return c
}

const until = async (ok: () => boolean) => {
  for (let t = 0; !ok(); t++) {
    if (t > 2000) throw new Error('the worker did not start within 20 s')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('kernel threads', () => {
  it('a queued task the worker has not started is claimed once and run by the caller; the worker skips it and goes on', async () => {
    const module = new WebAssembly.Module(assemble(1, [{ name: 'run', code: countingKernel() }]) as BufferSource)
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true })
    const run = (new WebAssembly.Instance(module, { env: { memory } }).exports as { run: (a: number, b: number, c: number, d: number) => void }).run
    const threads = new KernelThreads(module, memory, 1)
    try {
      await until(() => threads.ready(0))
      const m = new Int32Array(memory.buffer)
      // a long task (hundreds of ms) keeps the worker busy while the caller claims the one behind it
      threads.post(0, [0, 3e8, 0, 0])
      threads.post(0, [0, 0, 4, 0])
      expect(threads.claim(0, 1)).toBe(true)
      expect(threads.claim(0, 1)).toBe(false)
      run(0, 0, 4, 0)
      threads.waitDone(0, 2)
      expect([m[0], m[1]]).toEqual([1, 1])
      // finished and never-posted tasks cannot be claimed
      expect(threads.claim(0, 0)).toBe(false)
      expect(threads.claim(0, 2)).toBe(false)
      threads.post(0, [0, 0, 8, 0])
      threads.waitDone(0, 3)
      expect([m[0], m[1], m[2]]).toEqual([1, 1, 1])
    } finally {
      await threads.dispose()
    }
  })
})
