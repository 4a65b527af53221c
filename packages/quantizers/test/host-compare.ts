import { expect } from 'vitest'
import type { Caps, HostTensor } from '@tessera/core'
import { tolerance } from './matrix-common.js'

/**
 * Two runs of one computation traced into two programs (e.g. with and without the host
 * boundary's finite probe) on one backend: integers and bools exactly, floats within the
 * backend's program tolerance (0 on exact backends such as the cpu interpreter), NaN only with NaN.
 */
export function expectAgree(got: HostTensor, want: HostTensor, caps: Caps, label: string): void {
  expect(got.shape, `${label}: shape`).toEqual(want.shape)
  expect(got.dtype, `${label}: dtype`).toBe(want.dtype)
  if (want.dtype !== 'float32') {
    expect(Array.from(got.data), label).toEqual(Array.from(want.data))
    return
  }
  for (let i = 0; i < want.data.length; i++) {
    const g = got.data[i]!, w = want.data[i]!
    if (Number.isNaN(w)) expect(Number.isNaN(g), `${label}[${i}]: ${g}, want NaN`).toBe(true)
    else if (!Number.isFinite(w)) expect(g, `${label}[${i}]`).toBe(w)
    else expect(Math.abs(g - w), `${label}[${i}]: ${g} vs ${w}`).toBeLessThanOrEqual(tolerance(caps, w))
  }
}

/** Every entry of two records of host tensors, by name (same names). */
export function expectAgreeAll(got: Readonly<Record<string, HostTensor>>, want: Readonly<Record<string, HostTensor>>, caps: Caps, label: string): void {
  expect(Object.keys(got).sort(), `${label}: names`).toEqual(Object.keys(want).sort())
  for (const k of Object.keys(want)) expectAgree(got[k]!, want[k]!, caps, `${label}.${k}`)
}
