import { readFile, readdir } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import type { HostApplyResult } from '../src/run.js'
import { applyOnHost, indicesToCodesOnHost, runOnHost } from '../src/run.js'
import type { Init, Quantizer } from '../src/quantizer.js'
import type { GoldenFile } from '../src/golden/suite.js'

/** Backends every quantizer property runs on; the gpu.js backend joins this list when it lands. */
export const backends: readonly Backend[] = [cpuBackend()]

export function orThrow<A>(e: E.Either<{ message: string }, A>): A {
  if (E.isLeft(e)) throw new Error(e.left.message)
  return e.right
}

export async function applyQ(
  backend: Backend,
  q: Quantizer,
  init: Init,
  x: HostTensor,
  opts: { training?: boolean; key?: readonly [number, number] } = {},
): Promise<HostApplyResult> {
  return orThrow(
    await applyOnHost(
      q,
      { params: init.params, state: init.state, x, training: opts.training ?? false, ...(opts.key ? { key: tensorOf([...opts.key], [2], 'int32') } : {}) },
      backend,
    ),
  )
}

export async function decodeQ(backend: Backend, q: Quantizer, init: Init, indices: HostTensor): Promise<HostTensor> {
  return orThrow(await indicesToCodesOnHost(q, init.params, indices, backend, undefined, init.state))
}

export { runOnHost }

/**
 * The reference's golden cases, kept in the repository (test/golden, copied from the cases recorded
 * with vector-quantize-pytorch 1.31; format in its README.md) so a fresh clone tests with nothing beside it.
 * `next/` holds the cases of classes and options the library does not have (or only recently got).
 */
export const goldenDir = resolve(dirname(fileURLToPath(import.meta.url)), 'golden')

/** The `*.json` golden case files of a folder, for `runGoldenFiles`. */
export async function readGoldenDir(dir: string): Promise<GoldenFile[]> {
  const names = (await readdir(dir)).filter((f) => f.endsWith('.json'))
  return Promise.all(names.map(async (name) => ({ name, text: await readFile(join(dir, name), 'utf8') })))
}

/** A float32 tensor of the given shape from a seed: standard normal times `scale`. */
export function randn(shape: readonly number[], seed: number, scale = 1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1)
  const v = random.normalHost(random.keyFromSeed(seed), n).map((x) => x * scale)
  return tensorOf(v, shape)
}

export const arr = (t: HostTensor): number[] => Array.from(t.data)

export function expectClose(got: HostTensor, want: HostTensor, tol = 1e-5): void {
  if (got.shape.join(',') !== want.shape.join(',')) throw new Error(`shape [${got.shape}] vs [${want.shape}]`)
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i]!, w = want.data[i]!
    if (!(Math.abs(g - w) <= tol * Math.max(1, Math.abs(w)))) throw new Error(`element ${i}: ${g} vs ${w}`)
  }
}

/** Deep copies of a state/params record, to check later that nothing wrote into them. */
export function snapshot(rec: Readonly<Record<string, HostTensor>>): Record<string, number[]> {
  return Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, Array.from(v.data)]))
}

/** A hand-built safetensors file, as another writer (e.g. Python's safetensors) would lay it out. */
export function manualSafetensors(header: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const h = new TextEncoder().encode(JSON.stringify(header))
  const out = new Uint8Array(8 + h.length + data.length)
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true)
  out.set(h, 8)
  out.set(data, 8 + h.length)
  return out
}

/** Every array of a host result, by its path (`state._codebook.embed`, `extra.codebook_dist`, …). */
export function arraysOf(r: HostApplyResult): Record<string, HostTensor> {
  const out: Record<string, HostTensor> = { quantized: r.quantized, indices: r.indices, loss: r.loss }
  for (const part of ['losses', 'state', 'extra', 'updatedParams'] as const)
    for (const [k, t] of Object.entries(r[part] ?? {})) out[`${part}.${k}`] = t
  return out
}

/** Named host tensors as plain values (shape, dtype, data as an array) for toEqual. */
export const plainValues = (rec: Readonly<Record<string, HostTensor>>) =>
  Object.fromEntries(Object.entries(rec).map(([k, t]) => [k, { shape: t.shape, dtype: t.dtype, data: Array.from(t.data) }]))
