import type { HostTensor, Program, Tensor } from '@tessera/core'
import { traceOrThrow } from '@tessera/core'
import { fastBackend, planProgram } from '../src/index.js'
import type { NearestStep } from '../src/nearest.js'
import { runWithWorkers } from './loop-helpers.js'

/** What the screening tests (nearest-screen.test.ts, nearest-affine.test.ts) share: the distance forms, a run, data. */

export const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

export type Form = 'dist' | 'vq' | 'cosine' | 'sqrt' | 'abs'
/**
 * The distance forms: squared euclidean (argmin), VectorQuantize's -sqrt(max(d, 1e-8)) (argmax),
 * a plain dot (argmax), an unclamped sqrt (NaN where rounding makes a distance negative: the
 * first NaN wins), and |d - 2x.c| (not monotone: never screened).
 */
export function program(form: Form, n: number, d: number, k: number): Program {
  return traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => {
    const xc = x.matmul(cb.mT)
    const x2 = x.square().sum(-1, true), c2 = cb.square().sum(-1)
    if (form === 'dist') return [x2.sub(xc.mul(2)).add(c2).argmin(-1)]
    if (form === 'vq') return [x2.add(c2).add(xc.mul(-2)).maximum(1e-8).sqrt().neg().argmax(-1)]
    if (form === 'cosine') return [xc.argmax(-1)]
    if (form === 'sqrt') return [x2.add(c2).sub(xc.mul(2)).sqrt().argmin(-1)]
    return [x2.add(c2).sub(xc.mul(2)).abs().argmin(-1)]
  }).program
}

export const nearestStep = (p: Program): NearestStep => {
  const s = planProgram(p, { wasm: true, threads: 1 }).steps.find((st) => st.kind === 'nearest')
  if (!s || s.kind !== 'nearest') throw new Error('no nearest step')
  return s.step
}

/** The first output of `p` on rows x, codebook c and any further inputs, on a fresh backend. */
export async function indices(p: Program, x: HostTensor, c: HostTensor, threads: number, nearestScreen: boolean, ...more: HostTensor[]): Promise<number[]> {
  const b = fastBackend({ threads, nearestScreen, relaxedSimd: false })
  try {
    return Array.from((await runWithWorkers(b.compile(p), [x, c, ...more], threads))[0]!.data)
  } finally {
    await b.dispose?.()
  }
}

export function lcg(seed: number) {
  let s = seed >>> 0
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296)
}
export const gauss = (len: number, seed: number, scale = 1) => {
  const r = lcg(seed)
  return Array.from({ length: len }, () => Math.fround(Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r()) * scale))
}
