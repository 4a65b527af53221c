import { describe, expect, it } from 'vitest'
import { Code, I32, assemble } from '../src/wasm/asm.js'
import { KernelThreads, LateWorkers, ProgramCalls, WorkerPool } from '../src/wasm/threads.js'
import { fastBackend } from '../src/index.js'
import { traceOrThrow } from '@tessera/core'
import type { Tensor } from '@tessera/core'
import { nearestStepsOf, residualProgram } from './loop-helpers.js'

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

/** Runs `f` with a two-thread fast backend, disposed afterwards. */
async function withTwoThreads(f: (be: ReturnType<typeof fastBackend>) => Promise<void>): Promise<void> {
  const be = fastBackend({ threads: 2 })
  try {
    await f(be)
  } finally {
    await be.dispose!()
  }
}

/** Inputs of residualProgram(n, d, k, layers): rows, then one codebook per layer. */
function residualInputs(n: number, d: number, k: number, layers: number) {
  const rnd = (len: number, seed: number) => Float32Array.from({ length: len }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.5)
  return [{ shape: [n, d], dtype: 'float32' as const, data: rnd(n * d, 1) }, ...Array.from({ length: layers }, (_, l) => ({ shape: [k, d], dtype: 'float32' as const, data: rnd(k * d, l + 2) }))]
}

describe('kernel threads', () => {
  it('a queued task the worker has not started is claimed once and run by the caller; the worker skips it and goes on', async () => {
    const module = new WebAssembly.Module(assemble(1, [{ name: 'run', code: countingKernel() }]) as BufferSource)
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true })
    const run = (new WebAssembly.Instance(module, { env: { memory } }).exports as { run: (a: number, b: number, c: number, d: number) => void }).run
    const threads = KernelThreads.alone(module, memory, 1)
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

describe('worker pool', () => {
  const kernelOn = (module: WebAssembly.Module) => {
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true })
    return { memory, m: new Int32Array(memory.buffer) }
  }

  it("two kernels take turns on one worker; one kernel's failure there is reported to it alone", async () => {
    const module = new WebAssembly.Module(assemble(1, [{ name: 'run', code: countingKernel() }]) as BufferSource)
    const pool = new WorkerPool(1)
    try {
      expect(pool.started).toBe(0)
      const a = kernelOn(module), b = kernelOn(module)
      const ta = pool.kernel(module, a.memory), tb = pool.kernel(module, b.memory)
      expect(pool.started).toBe(1)
      await until(() => ta.ready(0))
      ta.post(0, [0, 0, 4, 0])
      tb.post(0, [0, 0, 8, 0])
      tb.waitDone(0, 2)
      // each task ran on its own kernel's memory, through one queue
      expect([a.m[1], a.m[2], b.m[1], b.m[2]]).toEqual([1, 0, 0, 1])
      expect(ta.posted(0)).toBe(2)
      // an out-of-bounds load traps in kernel a's task on the worker
      ta.post(0, [0, 0, 1 << 20, 0])
      expect(() => ta.waitDone(0, 3)).toThrow(/kernel failed in a worker thread/)
      expect(tb.done(0)).toBe(3)
      tb.post(0, [0, 0, 8, 0])
      tb.waitDone(0, 4)
      expect(b.m[2]).toBe(2)
      // a released kernel leaves the others running
      await ta.dispose()
      tb.post(0, [0, 0, 8, 0])
      tb.waitDone(0, tb.posted(0))
      expect(b.m[2]).toBe(3)
    } finally {
      await pool.dispose()
    }
  })

  it("a nearest-code search's first call runs on the calling thread alone; calls awaited back to back start its worker at the second", async () => {
    await withTwoThreads(async (be) => {
      const [n, d, k] = [4096, 16, 256]
      const exe = be.compile(residualProgram(n, d, k, 1))
      const ins = residualInputs(n, d, k, 1)
      const [search] = nearestStepsOf(exe)
      const first = await exe.run(ins)
      expect([search!.workerThreads, search!.workerChunks, be.workerThreads]).toEqual([0, 0, 0])
      const second = await exe.run(ins)
      expect([search!.workerThreads, be.workerThreads]).toEqual([1, 1])
      second.forEach((o, i) => expect(Array.from(o.data)).toEqual(Array.from(first[i]!.data)))
    })
  })

  it('searches long enough to repay a worker (2^32 multiply-adds in all) start it within the first call', async () => {
    await withTwoThreads(async (be) => {
      const [n, d, k, layers] = [16384, 64, 1024, 4]
      const exe = be.compile(residualProgram(n, d, k, layers))
      const ins = residualInputs(n, d, k, layers)
      await exe.run(ins)
      expect(nearestStepsOf(exe).map((s) => s.workerThreads)).toEqual([1, 1, 1, 1])
      expect(be.workerThreads).toBe(1)
    })
  })

  it('calls awaited back to back (no timer runs between them) start the worker of a threaded elementwise pass by the second call', async () => {
    // tanh over 2^18 elements and more is a threaded pass (plan.ts); its first call runs on this thread alone
    const n = 2 ** 18
    const program = traceOrThrow([{ shape: [n], dtype: 'float32' as const }], (x: Tensor) => [x.tanh().mul(3)]).program
    const data = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 4)
    await withTwoThreads(async (be) => {
      const exe = be.compile(program)
      const ones = await exe.run([{ shape: [n], dtype: 'float32', data }])
      expect(be.workerThreads).toBe(0)
      for (let i = 0; i < 3; i++) {
        const [got] = await exe.run([{ shape: [n], dtype: 'float32', data }])
        expect(Array.from(got!.data)).toEqual(Array.from(ones[0]!.data))
      }
      expect(be.workerThreads).toBe(1)
    })
  })

  it("a backend's programs share its worker threads: residual VQ's searches start one worker, not one per layer", async () => {
    await withTwoThreads(async (be) => {
      const [n, d, k, layers] = [4096, 16, 256, 3]
      const exe = be.compile(residualProgram(n, d, k, layers))
      const ins = residualInputs(n, d, k, layers)
      expect(be.workerThreads).toBe(0)
      // each search's first call runs on this thread alone; its workers are made on a timer after it
      await exe.run(ins)
      expect(be.workerThreads).toBe(0)
      await new Promise((r) => setTimeout(r, 0))
      const again = be.compile(residualProgram(n, d, k, layers))
      await again.run(ins)
      await new Promise((r) => setTimeout(r, 0))
      expect(be.workerThreads).toBe(1)
    })
  })
  it("a dense product's worker starts after the program's first call (not at compile); calls awaited back to back start it at the second", async () => {
    // 128 x 256 x 256 multiply-adds: over the split threshold (2^21)
    const [m, k, n] = [128, 256, 256]
    const program = traceOrThrow([{ shape: [m, k], dtype: 'float32' as const }, { shape: [k, n], dtype: 'float32' as const }], (a: Tensor, b: Tensor) => [a.matmul(b).mul(2)]).program
    const ins = [
      { shape: [m, k], dtype: 'float32' as const, data: Float32Array.from({ length: m * k }, (_, i) => Math.sin(i) * 0.5) },
      { shape: [k, n], dtype: 'float32' as const, data: Float32Array.from({ length: k * n }, (_, i) => Math.cos(i) * 0.5) },
    ]
    await withTwoThreads(async (be) => {
      const exe = be.compile(program)
      expect(be.workerThreads).toBe(0)
      const [first] = await exe.run(ins)
      expect(be.workerThreads).toBe(0)
      for (let i = 0; i < 3; i++) {
        const [again] = await exe.run(ins)
        expect(Array.from(again!.data)).toEqual(Array.from(first!.data))
      }
      expect(be.workerThreads).toBe(1)
    })
  })
})

describe('late worker start', () => {
  const noThreads = () => {
    throw new Error('no threads here')
  }

  it("runs the program's first call alone, starts the workers on a timer after it, or at the next call", async () => {
    const module = new WebAssembly.Module(assemble(1, [{ name: 'run', code: countingKernel() }]) as BufferSource)
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true })
    for (const timer of [true, false]) {
      const calls = new ProgramCalls()
      let made = 0
      const late = new LateWorkers(() => (made++, KernelThreads.alone(module, memory, 1)), calls)
      try {
        calls.begin()
        expect(late.forCall()).toBeUndefined()
        expect(late.forCall()).toBeUndefined()
        if (timer) {
          await new Promise((r) => setTimeout(r, 0))
          expect(late.current?.count).toBe(1)
        } else expect(late.current).toBeUndefined()
        calls.begin()
        expect(late.forCall()?.count).toBe(1)
        expect(made).toBe(1)
      } finally {
        await late.dispose()
      }
    }
  })

  it('starts within the first call when told to, and a start that fails leaves the kernel on the calling thread', async () => {
    const calls = new ProgramCalls()
    calls.begin()
    let tries = 0
    const late = new LateWorkers(() => (tries++, noThreads()), calls, true)
    expect(late.forCall()).toBeUndefined()
    calls.begin()
    expect(late.forCall()).toBeUndefined()
    // tried once: a host that cannot start them is not asked again every call
    expect(tries).toBe(1)
    await late.dispose()
  })

  it("outside a program it counts the kernel's own calls", async () => {
    const module = new WebAssembly.Module(assemble(1, [{ name: 'run', code: countingKernel() }]) as BufferSource)
    const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true })
    const late = new LateWorkers(() => KernelThreads.alone(module, memory, 1))
    try {
      expect(late.forCall()).toBeUndefined()
      expect(late.forCall()?.count).toBe(1)
    } finally {
      await late.dispose()
    }
  })
})
