import type { HostTensor } from '@tessera/core'
import { random, sizeOf } from '@tessera/core'
import type { GoldenCase } from '../src/golden/format.js'
import type { Quantizer } from '../src/quantizer.js'

/**
 * Test helpers that write safetensors files the way PyTorch checkpoints come: any of the dtypes
 * torch saves (half, bfloat16, double, int64), laid out by hand as Python's writer does, so the
 * decoder is tested against bytes Tessera's own encoder never produces.
 */

export type FileDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I32' | 'I64' | 'BOOL'
export interface FileEntry {
  readonly t: HostTensor
  readonly dtype: FileDtype
}

const WIDTH: Record<FileDtype, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, BOOL: 1 }

/** Round half to even, for the dtype conversions below (torch rounds to nearest even too). */
function roundHalfEven(x: number): number {
  const f = Math.floor(x), d = x - f
  return d > 0.5 ? f + 1 : d < 0.5 ? f : f % 2 === 0 ? f : f + 1
}

/**
 * float32 value -> IEEE half bits, rounded to nearest even. Written independently of the decoder's
 * field arithmetic (by scaling into the half's units), so each checks the other.
 */
export function toHalfBits(v: number): number {
  if (Number.isNaN(v)) return 0x7e00
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0
  const a = Math.abs(v)
  if (a >= 65520) return sign | 0x7c00 // at or past the rounding midpoint above the largest half
  if (a < 2 ** -14) return sign | roundHalfEven(a * 2 ** 24) // subnormal units; 1024 carries into the smallest normal
  let e = Math.floor(Math.log2(a))
  if (2 ** e > a) e--
  if (2 ** (e + 1) <= a) e++
  let m = roundHalfEven((a / 2 ** e - 1) * 1024)
  if (m === 1024) (m = 0), e++
  return e + 15 >= 31 ? sign | 0x7c00 : sign | ((e + 15) << 10) | m
}

/** float32 value -> bfloat16 bits, rounded to nearest even (the top 16 bits of the float32). */
export function toBf16Bits(v: number): number {
  const dv = new DataView(new ArrayBuffer(4))
  dv.setFloat32(0, v)
  const bits = dv.getUint32(0)
  if (Number.isNaN(v)) return 0x7fc0
  const upper = bits >>> 16, lower = bits & 0xffff
  return (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1) ? upper + 1 : upper) & 0xffff
}

/** Whether every value of a float32 tensor survives a round trip through `dtype` unchanged. */
export function exactIn(t: HostTensor, dtype: 'F16' | 'BF16'): boolean {
  const dv = new DataView(new ArrayBuffer(4))
  return Array.from(t.data).every((v) => {
    if (dtype === 'BF16') {
      dv.setFloat32(0, v)
      return (dv.getUint32(0) & 0xffff) === 0
    }
    return Number.isFinite(v) && halfValue(toHalfBits(v)) === v
  })
}

/** The value of half bits, by the textbook formula (for the writer's exactness check only). */
const halfValue = (h: number): number => {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15)
}

/** A safetensors file with each entry in its own dtype, and metadata, laid out by hand. */
export function writeSafetensors(entries: Readonly<Record<string, FileEntry>>, metadata?: Readonly<Record<string, string>>): Uint8Array {
  const names = Object.keys(entries)
  const header: Record<string, unknown> = {}
  if (metadata) header['__metadata__'] = metadata
  let offset = 0
  for (const name of names) {
    const { t, dtype } = entries[name]!
    const n = sizeOf(t.shape) * WIDTH[dtype]
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + n] }
    offset += n
  }
  const h = new TextEncoder().encode(JSON.stringify(header))
  const out = new Uint8Array(8 + h.length + offset)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, BigInt(h.length), true)
  out.set(h, 8)
  let pos = 8 + h.length
  for (const name of names) {
    const { t, dtype } = entries[name]!
    for (const v of t.data) {
      if (dtype === 'F32') view.setFloat32(pos, v, true)
      else if (dtype === 'F64') view.setFloat64(pos, v, true)
      else if (dtype === 'F16') view.setUint16(pos, toHalfBits(v), true)
      else if (dtype === 'BF16') view.setUint16(pos, toBf16Bits(v), true)
      else if (dtype === 'I32') view.setInt32(pos, v, true)
      else if (dtype === 'I64') view.setBigInt64(pos, BigInt(v), true)
      else view.setUint8(pos, v ? 1 : 0)
      pos += WIDTH[dtype]
    }
  }
  return out
}

/** The reference's `persistent=False` buffers: torch's `state_dict()` leaves them out. */
export const TORCH_NON_PERSISTENT = ['_levels', '_basis', 'implicit_codebook', 'codebook', 'scales', 'soft_clamp_input_value', 'commitment_loss_weight', 'quantization_loss_weight']
const nonPersistent = (name: string) => TORCH_NON_PERSISTENT.some((n) => name === n || name.endsWith(`.${n}`))

/**
 * What torch's `state_dict()` of a golden case's module holds: the case's state without the
 * non-persistent buffers and without rvq_basic's derived `codebooks` stack, plus the persistent
 * buffers the case leaves out because its outputs do not depend on them (rvq_basic keeps only the
 * codebooks, not `cluster_size`, `embed_avg`, `initted`), taken from a fresh init.
 */
export function torchStateOf(c: GoldenCase, q: Quantizer): Record<string, { t: HostTensor; ref: string }> {
  const out: Record<string, { t: HostTensor; ref: string }> = {}
  for (const [name, g] of Object.entries(c.state)) if (!nonPersistent(name) && name !== 'codebooks') out[name] = { t: g.host, ref: g.refDtype }
  const fresh = q.init(random.keyFromSeed(7))
  for (const [name, t] of Object.entries({ ...fresh.params, ...fresh.state }))
    if (!(name in out) && !nonPersistent(name) && !(name in c.state)) out[name] = { t, ref: t.dtype }
  return out
}

/**
 * File dtypes for a torch-like state: int64 where the reference has int64, and the float entries
 * spread over F16, BF16, F64 and F32 in turn (F16/BF16 only where every value is exact in it,
 * else F64, which holds any float32 exactly), so loading must still reproduce the recorded outputs.
 */
export function withFileDtypes(sd: Readonly<Record<string, { t: HostTensor; ref: string }>>): Record<string, FileEntry> {
  const order: FileDtype[] = ['F16', 'BF16', 'F64', 'F32']
  let i = 0
  return Object.fromEntries(
    Object.entries(sd).map(([name, { t, ref }]) => {
      if (t.dtype === 'bool') return [name, { t, dtype: 'BOOL' }]
      if (t.dtype === 'int32') return [name, { t, dtype: ref === 'int64' ? 'I64' : 'I32' }]
      const want = order[i++ % order.length]!
      const dtype = (want === 'F16' || want === 'BF16') && !exactIn(t, want) ? 'F64' : want
      return [name, { t, dtype }]
    }),
  )
}
