import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { TesseraError, checkHostTensor, describeValue, sizeOf } from '@tessera/core'
import type { Named } from '../quantizer.js'

/**
 * safetensors files: an 8-byte little-endian header length, a JSON header
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`
 * and the raw little-endian tensor bytes, offsets relative to the end of the header.
 * Written: F32, I32, BOOL. Read: those, plus I64 (narrowed to int32 with a range check) and F16,
 * BF16, F64 (widened to float32: F16 and BF16 exactly, F64 rounded to nearest), since PyTorch
 * checkpoints are often saved in half precision or as doubles.
 */

const WHERE = 'safetensors'
const err = (msg: string, where = WHERE) => E.left(new TesseraError('input', where, msg))

const WRITE_DTYPE = { float32: 'F32', int32: 'I32', bool: 'BOOL' } as const
const BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, BOOL: 1 }

/**
 * IEEE half -> float32, exactly: every half (subnormals, infinities, NaN) is a float32. Computed
 * from the fields rather than through a Float16Array, which older browsers and Node 20 lack.
 */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1
  const exp = (h >> 10) & 0x1f
  const mant = h & 0x3ff
  if (exp === 0) return sign * mant * 2 ** -24
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN
  return sign * (1 + mant / 1024) * 2 ** (exp - 15)
}

/** Reads one little-endian element of a floating-point dtype at a byte offset, widened to float32. */
function floatReader(view: DataView, dtype: string): (at: number) => number {
  switch (dtype) {
    case 'F16':
      return (at) => halfToFloat(view.getUint16(at, true))
    case 'BF16': {
      // bfloat16 is the top half of a float32's bits: shift it back up and read it as float32
      const scratch = new DataView(new ArrayBuffer(4))
      return (at) => (scratch.setUint32(0, view.getUint16(at, true) << 16), scratch.getFloat32(0))
    }
    case 'F64':
      return (at) => view.getFloat64(at, true) // rounded to nearest float32 by the Float32Array store
    default:
      return (at) => view.getFloat32(at, true)
  }
}

/**
 * Encode a flat state dict; names are written in sorted order, tensors packed back to back. It
 * returns bytes, not an Either, so a bad argument (not a record of valid host tensors, metadata
 * that is not strings) throws a TesseraError naming it, as `tensorOf` does; never a TypeError.
 */
export function encodeSafetensors(sd: Named<HostTensor>, metadata?: Readonly<Record<string, string>>): Uint8Array {
  if (typeof sd !== 'object' || sd === null || Array.isArray(sd))
    throw new TesseraError('input', WHERE, `the state dict must be an object of named host tensors, got ${describeValue(sd)}`)
  for (const name of Object.keys(sd)) {
    const ok = checkHostTensor(sd[name], `entry ${name}`, WHERE)
    if (E.isLeft(ok)) throw ok.left
  }
  if (metadata !== undefined && (typeof metadata !== 'object' || metadata === null || Object.values(metadata).some((v) => typeof v !== 'string')))
    throw new TesseraError('input', WHERE, 'metadata must map strings to strings')
  const names = Object.keys(sd).sort()
  // no prototype: a tensor named __proto__ is then an ordinary key (on {} it would set the prototype)
  const header: Record<string, unknown> = Object.create(null) as Record<string, unknown>
  if (metadata) header['__metadata__'] = { ...metadata }
  let offset = 0
  for (const name of names) {
    const t = sd[name]!
    const dt = WRITE_DTYPE[t.dtype]
    const n = sizeOf(t.shape) * BYTES[dt]!
    header[name] = { dtype: dt, shape: [...t.shape], data_offsets: [offset, offset + n] }
    offset += n
  }
  const json = JSON.stringify(header)
  // pad the header with spaces so the data starts 8-byte aligned (allowed by the format); TextEncoder
  // gives the UTF-8 length in Node and browsers alike (no Buffer)
  const enc = new TextEncoder()
  const pad = (8 - ((8 + enc.encode(json).length) % 8)) % 8
  const headerBytes = enc.encode(json + ' '.repeat(pad))
  const out = new Uint8Array(8 + headerBytes.length + offset)
  const view = new DataView(out.buffer)
  view.setBigUint64(0, BigInt(headerBytes.length), true)
  out.set(headerBytes, 8)
  const base = 8 + headerBytes.length
  let pos = base
  for (const name of names) {
    const t = sd[name]!
    for (let i = 0; i < t.data.length; i++) {
      const v = t.data[i]!
      if (t.dtype === 'float32') view.setFloat32(pos, v, true), (pos += 4)
      else if (t.dtype === 'int32') view.setInt32(pos, v, true), (pos += 4)
      else out[pos++] = v ? 1 : 0
    }
  }
  return out
}

export interface DecodedSafetensors {
  readonly tensors: Record<string, HostTensor>
  readonly metadata: Record<string, string>
}

/** Decode a safetensors file; every malformed part is a Left naming the tensor and the problem. */
export function decodeSafetensors(bytes: Uint8Array): E.Either<TesseraError, DecodedSafetensors> {
  if (bytes.length < 8) return err(`file has ${bytes.length} bytes; needs at least the 8-byte header length`)
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const hlen = view.getBigUint64(0, true)
  if (hlen > BigInt(bytes.length - 8)) return err(`header length ${hlen} exceeds the file (${bytes.length - 8} bytes after the length)`)
  const n = Number(hlen)
  let header: unknown
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, 8 + n)))
  } catch (e) {
    return err(`header is not valid UTF-8 JSON: ${(e as Error).message}`)
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) return err('header must be a JSON object')
  const base = 8 + n
  const dataLen = bytes.length - base
  // entries in a list, made into a record at the end with fromEntries: a tensor named __proto__
  // becomes an own property instead of replacing the record's prototype
  const tensors: [string, HostTensor][] = []
  const ranges: { name: string; begin: number; end: number }[] = []
  let metadata: Record<string, string> = {}
  for (const [name, entry] of Object.entries(header)) {
    const where = `${WHERE}[${name}]`
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Object.values(entry).some((v) => typeof v !== 'string'))
        return err('__metadata__ must map strings to strings')
      metadata = { ...(entry as Record<string, string>) }
      continue
    }
    const { dtype, shape, data_offsets } = (entry ?? {}) as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
    if (typeof dtype !== 'string' || !(dtype in BYTES))
      return err(`dtype ${JSON.stringify(dtype)} is not supported (F32, F16, BF16, F64, I32, I64, BOOL)`, where)
    if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0))
      return err(`shape must be a list of non-negative integers, got ${JSON.stringify(shape)}`, where)
    if (!Array.isArray(data_offsets) || data_offsets.length !== 2 || data_offsets.some((d) => !Number.isInteger(d) || d < 0))
      return err(`data_offsets must be [begin, end], got ${JSON.stringify(data_offsets)}`, where)
    const [begin, end] = data_offsets as [number, number]
    const count = sizeOf(shape as number[])
    const width = BYTES[dtype]!
    if (end < begin || end > dataLen) return err(`data_offsets [${begin}, ${end}] fall outside the ${dataLen} data bytes`, where)
    if (end - begin !== count * width)
      return err(`data_offsets span ${end - begin} bytes but ${dtype}[${(shape as number[]).join(',')}] needs ${count * width}`, where)
    ranges.push({ name, begin, end })
    const at = base + begin
    if (dtype === 'F32' || dtype === 'F16' || dtype === 'BF16' || dtype === 'F64') {
      const a = new Float32Array(count)
      const read = floatReader(view, dtype)
      for (let i = 0; i < count; i++) a[i] = read(at + width * i)
      tensors.push([name, { shape: [...(shape as number[])], dtype: 'float32', data: a }])
    } else if (dtype === 'I32') {
      const a = new Int32Array(count)
      for (let i = 0; i < count; i++) a[i] = view.getInt32(at + 4 * i, true)
      tensors.push([name, { shape: [...(shape as number[])], dtype: 'int32', data: a }])
    } else if (dtype === 'I64') {
      const a = new Int32Array(count)
      for (let i = 0; i < count; i++) {
        const v = view.getBigInt64(at + 8 * i, true)
        if (v > 2147483647n || v < -2147483648n) return err(`I64 element ${i} = ${v} does not fit in int32`, where)
        a[i] = Number(v)
      }
      tensors.push([name, { shape: [...(shape as number[])], dtype: 'int32', data: a }])
    } else {
      const a = new Uint8Array(count)
      for (let i = 0; i < count; i++) {
        const v = bytes[at + i]!
        if (v > 1) return err(`BOOL element ${i} has byte ${v}; expected 0 or 1`, where)
        a[i] = v
      }
      tensors.push([name, { shape: [...(shape as number[])], dtype: 'bool', data: a }])
    }
  }
  // the data bytes must be exactly the tensors' ranges back to back: an overlap would let two
  // tensors share bytes (silently shifted data) and a gap or trailing bytes means a malformed file
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end)
  let pos = 0
  for (const r of ranges) {
    if (r.begin < pos) return err(`data_offsets [${r.begin}, ${r.end}] overlap the previous tensor's bytes (up to ${pos})`, `${WHERE}[${r.name}]`)
    if (r.begin > pos) return err(`data_offsets [${r.begin}, ${r.end}] leave a gap of ${r.begin - pos} bytes after byte ${pos}`, `${WHERE}[${r.name}]`)
    pos = r.end
  }
  if (pos !== dataLen) return err(`tensors cover ${pos} of the ${dataLen} data bytes; the rest is unaccounted for`)
  return E.right({ tensors: Object.fromEntries(tensors), metadata })
}
