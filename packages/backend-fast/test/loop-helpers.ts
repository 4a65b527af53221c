import type { Executable, HostTensor, Program, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { expect } from 'vitest'
import { fastBackend } from '../src/index.js'

export const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

/** Deterministic inputs in (-1.5, 1.5) that differ per seed. */
export const values = (n: number, seed: number) => Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed * 78.233) * 1.5)

/** Every output element identical, bit for bit (Object.is: -0 and NaN payload-free comparisons). */
export function expectSameBits(got: HostTensor[], want: HostTensor[], what: string): void {
  expect(got.length).toBe(want.length)
  got.forEach((g, i) => {
    expect(g.shape).toEqual(want[i]!.shape)
    Array.from(g.data).forEach((v, j) => {
      if (!Object.is(v, want[i]!.data[j])) expect.fail(`${what}: output ${i} element ${j}: ${v} vs ${want[i]!.data[j]}`)
    })
  })
}

/**
 * LFQ's entropy terms (the bench's entropy workload) at a small size: softmax probabilities, their per-row
 * entropy and the entropy of their mean over rows; `rowMax` also reads the probabilities once more.
 */
export function entropyProgram(n: number, dim: number, k: number, rowMax: boolean): Program {
  return traceOrThrow([f32([n, dim]), f32([k, dim])], (x: Tensor, cb: Tensor) => {
    const prob = x.matmul(cb.mT).mul(-2).mul(-10).softmax(-1)
    const entropy = (p: Tensor, axis: number | undefined) => p.mul(p.maximum(1e-5).log()).sum(axis).neg()
    const terms = [entropy(prob, -1).mean(), entropy(prob.mean(0), undefined)]
    return rowMax ? [...terms, prob.max(-1)] : terms
  }).program
}

/** The entropy program (n rows, 3 dims, 8 codes) in blocks of `rows` gives the same bits as unblocked (JS loops). */
export async function expectBlockedEntropySameBits(n: number, rows: number, seed: number, rowMax: boolean): Promise<void> {
  const p = entropyProgram(n, 3, 8, rowMax)
  const ins = [tensorOf(values(n * 3, seed), [n, 3]), tensorOf(values(24, seed + 1), [8, 3])]
  const plain = await runOrThrow(p, ins, fastBackend({ wasm: false }))
  const blocked = await runOrThrow(p, ins, fastBackend({ wasm: false, blockRows: rows }))
  expectSameBits(blocked, plain, `n=${n} rows=${rows}`)
}

interface ThreadedChain { threads: number; callerBlocks: number; n: number; rows: number; workersStarted: boolean }

/** The row chain of a compiled fast executable (tests look inside to see who ran the blocks). */
export function rowChainOf(ex: Executable): ThreadedChain {
  const plan = (ex as unknown as { plan: { steps: { kind: string; chain?: ThreadedChain }[] } }).plan
  return plan.steps.find((s) => s.kind === 'rows')!.chain!
}

/**
 * Runs until the worker threads have taken blocks (they start asynchronously), checking every
 * call against `want`; returns whether they did within 20 calls.
 */
export async function runUntilShared(ex: Executable, ins: HostTensor[], want: HostTensor[]): Promise<boolean> {
  const chain = rowChainOf(ex)
  const blocks = Math.ceil(chain.n / chain.rows)
  for (let i = 0; i < 20; i++) {
    expectSameBits(await ex.run(ins), want, `call ${i}`)
    if (chain.callerBlocks < blocks) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return false
}

interface NearestWorkers { readonly workerThreads: number; readonly workersReady: boolean; readonly workerChunks: number }

/** The nearest-code steps of a compiled fast executable. */
export function nearestStepsOf(ex: Executable): NearestWorkers[] {
  const plan = (ex as unknown as { plan: { steps: { kind: string; step?: NearestWorkers }[] } }).plan
  return plan.steps.flatMap((s) => (s.kind === 'nearest' ? [s.step!] : []))
}

/**
 * A call of `ex` in which its nearest-code steps' worker threads took part: the first call runs
 * alone and makes them on a timer after it, and they start asynchronously (a call computes alone
 * until they have), so this calls, lets the timer run, waits until they have started, then calls
 * again and checks that they took chunks (each call checked against the one before). For a
 * one-thread executable, one call.
 */
export async function runWithWorkers(ex: Executable, ins: HostTensor[], threads: number): Promise<HostTensor[]> {
  const first = await ex.run(ins)
  if (threads === 1) return first
  await new Promise((r) => setTimeout(r, 0))
  const steps = nearestStepsOf(ex).filter((s) => s.workerThreads > 0)
  expect(steps.length, 'nearest-code steps with worker threads').toBeGreaterThan(0)
  for (let i = 0; i < 200 && !steps.every((s) => s.workersReady); i++) await new Promise((r) => setTimeout(r, 25))
  expect(steps.every((s) => s.workersReady), 'worker threads started').toBe(true)
  const out = await ex.run(ins)
  for (const s of steps) expect(s.workerChunks, 'chunks computed by worker threads').toBeGreaterThan(0)
  expectSameBits(out, first, 'the call with worker threads against the first call')
  return out
}

/** runWithWorkers for a child process's script (plain JS, no vitest there): it throws where the helper's checks fail. */
export const childRunWithWorkers = `
async function runWithWorkers(ex, ins, threads) {
  const first = await ex.run(ins)
  if (threads === 1) return first
  await new Promise((r) => setTimeout(r, 0))
  const steps = ex.plan.steps.filter((s) => s.kind === 'nearest' && s.step.workerThreads > 0).map((s) => s.step)
  if (steps.length === 0) throw new Error('no nearest-code step with worker threads')
  for (let i = 0; i < 200 && !steps.every((s) => s.workersReady); i++) await new Promise((r) => setTimeout(r, 25))
  if (!steps.every((s) => s.workersReady)) throw new Error('worker threads did not start')
  const out = await ex.run(ins)
  if (!steps.every((s) => s.workerChunks > 0)) throw new Error('worker threads took no chunks')
  if (!out.every((o, i) => o.data.every((v, j) => Object.is(v, first[i].data[j])))) throw new Error('the call with worker threads differs from the first call')
  return out
}
`

/** Residual VQ over `layers` codebooks (squared euclidean): the sum of the chosen codes, then each layer's indices. */
export function residualProgram(n: number, d: number, k: number, layers: number): Program {
  return traceOrThrow([f32([n, d]), ...Array.from({ length: layers }, () => f32([k, d]))], (x: Tensor, ...cbs: Tensor[]) => {
    let r = x
    let q: Tensor | undefined
    const idx: Tensor[] = []
    for (const cb of cbs) {
      const i = r.square().sum(-1, true).sub(r.matmul(cb.mT).mul(2)).add(cb.square().sum(-1)).argmin(-1)
      const g = cb.gather(i, 0)
      idx.push(i)
      q = q ? q.add(g) : g
      r = r.sub(g)
    }
    return [q!, ...idx]
  }).program
}
