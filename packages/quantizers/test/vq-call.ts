import * as E from 'fp-ts/lib/Either.js'
import type { Backend, HostTensor, Tensor, TesseraError } from '@tessera/core'
import { tensorOf } from '@tessera/core'
import type { Init, Named } from '../src/quantizer.js'
import type { VQCallOptions, VectorQuantize } from '../src/vq/vector-quantize.js'
import type { HostApplyResult } from '../src/run.js'
import { runOnHost } from '../src/run.js'

/** One VectorQuantize call's outputs on the host (those of applyOnHost, without updatedParams). */
export type VQCallResult = Omit<HostApplyResult, 'updatedParams'>

/**
 * Runs `q.apply` with forward options: `tensors` are host tensors fed as program inputs, and
 * `opts` builds the call's options from them (functions and numbers pass through as they are).
 */
export async function vqCall(
  backend: Backend,
  q: VectorQuantize,
  init: Init,
  x: HostTensor,
  o: { training?: boolean; key?: readonly [number, number]; tensors?: Named<HostTensor>; opts?: (t: Named<Tensor>) => Partial<VQCallOptions> } = {},
): Promise<E.Either<TesseraError, VQCallResult>> {
  const key = o.key ? tensorOf([...o.key], [2], 'int32') : null
  const r = await runOnHost(backend, [init.params, init.state, x, o.tensors ?? {}, key] as const, (p, s, xs, t, k) => {
    const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, {
      training: o.training ?? false,
      ...(k ? { key: k as Tensor } : {}),
      ...(o.opts ? o.opts(t as Named<Tensor>) : {}),
    })
    return { quantized: res.quantized, indices: res.indices, loss: res.loss, losses: { ...res.losses }, state: { ...res.state }, extra: { ...(res.extra ?? {}) } }
  })
  return r as E.Either<TesseraError, VQCallResult>
}

export async function vqCallOk(...args: Parameters<typeof vqCall>): Promise<VQCallResult> {
  const r = await vqCall(...args)
  if (E.isLeft(r)) throw new Error(r.left.message)
  return r.right
}

/** A bool (b, n) host mask from rows of 0/1. */
export const maskOf = (rows: readonly (readonly number[])[]): HostTensor =>
  tensorOf(rows.flat().map((v) => (v ? 1 : 0)), [rows.length, rows[0]!.length], 'bool')

/** Every element of `a` within `tol` of `b` (same length). */
export function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity
  let m = 0
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!)
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d
  }
  return m
}
