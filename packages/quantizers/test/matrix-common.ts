import type { Caps, HostTensor } from '@tessera/core'
import type { HostApplyResult } from '../src/run.js'
import type { Quantizer } from '../src/quantizer.js'

/** One cell of the cross-backend matrix (shared by the Node and browser runs; browser-safe). */
export interface Cell {
  readonly name: string
  readonly q: Quantizer
  readonly x: HostTensor
  readonly training: boolean
  readonly key?: readonly [number, number]
}

/** Float agreement for a whole quantizer program: OPS float ops' worth of the backend's per-op tolerance. */
export const OPS = 8
export const tolerance = (caps: Caps, want: number): number => OPS * (caps.atol + (caps.rtol + caps.transcendentalRtol) * Math.max(1, Math.abs(want)))

/** Every output of an apply by name: quantized, indices, loss, losses.*, state.*, extra.*. */
export function leaves(r: HostApplyResult): Map<string, HostTensor> {
  const m = new Map<string, HostTensor>([['quantized', r.quantized], ['indices', r.indices], ['loss', r.loss]])
  for (const [group, rec] of [['losses', r.losses], ['state', r.state], ['extra', r.extra]] as const)
    for (const [k, v] of Object.entries(rec ?? {})) m.set(`${group}.${k}`, v)
  return m
}
