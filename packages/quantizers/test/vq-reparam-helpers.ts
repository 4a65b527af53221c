import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { tensorOf } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'
import type { Init, Named } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import type { VQCallOptions, VectorQuantize } from '../src/vq/vector-quantize.js'
import type { Lane } from './lanes.js'
import { comparedLanes } from './zoo.js'
import { orThrow } from './helpers.js'

/**
 * Shared by the tests of VectorQuantize's reparametrisation options (affine, DiVeQ, bridge, in-place
 * optimizer): every lane, and one call returning everything the forward gives, `updatedParams` included.
 */

export const reference = cpuBackend()

export const lanes: readonly Lane[] = [{ name: 'cpu', make: async () => cpuBackend() as Backend }, ...comparedLanes]

export interface VQRun {
  readonly quantized: HostTensor
  readonly indices: HostTensor
  readonly loss: HostTensor
  readonly losses: Record<string, HostTensor>
  readonly state: Record<string, HostTensor>
  readonly extra: Record<string, HostTensor>
  readonly updatedParams: Record<string, HostTensor>
}

export type CallOptions = Omit<VQCallOptions, 'key'> & { readonly key?: readonly [number, number] }

export async function vqRun(backend: Backend, q: VectorQuantize, init: Init, x: HostTensor, opts: CallOptions): Promise<VQRun> {
  const { key, ...rest } = opts
  const k = tensorOf(key ?? [0, 0], [2], 'int32')
  const r = await runOnHost(backend, [init.params, init.state, x, k] as const, (p, s, xs, kk) => {
    const res = q.apply(p as Named<Tensor>, s as Named<Tensor>, xs as Tensor, { ...rest, ...(key ? { key: kk as Tensor } : {}) })
    return {
      quantized: res.quantized, indices: res.indices, loss: res.loss, losses: { ...res.losses }, state: { ...res.state },
      extra: { ...(res.extra ?? {}) }, updatedParams: { ...(res.updatedParams ?? {}) },
    }
  })
  return orThrow(r) as unknown as VQRun
}

/** Rows of a (…, d) host tensor as float64 arrays. */
export const rowsOf = (t: HostTensor, d: number): number[][] => Array.from({ length: t.data.length / d }, (_, r) => Array.from(t.data.slice(r * d, r * d + d)))

/** A state record with some entries replaced by host tensors of the same shape. */
export function withState(init: Init, entries: Record<string, number[] | boolean>): Init {
  const state = { ...init.state }
  for (const [k, v] of Object.entries(entries)) {
    const old = state[k]
    if (!old) throw new Error(`no state entry ${k}`)
    state[k] = typeof v === 'boolean' ? tensorOf([v ? 1 : 0], [], 'bool') : tensorOf(v, old.shape)
  }
  return { params: init.params, state }
}

/** |got − want| within `tol(want)` elementwise, with the worst element in the message. */
export function near(got: ArrayLike<number>, want: readonly number[], tol: (w: number) => number, what: string): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} elements, want ${want.length}`)
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!)
    if (!(e <= tol(want[i]!))) throw new Error(`${what}: element ${i} is ${got[i]}, want ${want[i]} (|err| ${e.toExponential(2)} > ${tol(want[i]!).toExponential(2)})`)
  }
}
