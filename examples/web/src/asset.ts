/**
 * The MNIST digits as one compact binary asset (`mnist-digits.bin`), written at build time from
 * the `mnist` package and read by the page; nothing is downloaded at run time. Layout: the magic
 * "TMN1", ten little-endian uint32 image counts (digit 0 to 9), then every image's 784 pixels as
 * bytes k, digit by digit. The package stores each grey level as k/255 rounded to 3 decimals
 * (256 distinct values), so decoding k the same way gives the demo's floats exactly.
 */
import { IMAGE_SIZE } from '../../demo/src/vqvae/digits.js'

const MAGIC = [0x54, 0x4d, 0x4e, 0x31] // "TMN1"
const HEADER = 4 + 10 * 4

/** The package's grey level for byte k. */
export const levelOf = (k: number): number => Math.round((k / 255) * 1000) / 1000

/** Encodes each digit's images (grey levels as the package stores them) into the asset's bytes. */
export function encodeDigits(perDigit: readonly ArrayLike<number>[]): Uint8Array {
  if (perDigit.length !== 10) throw new Error(`expected 10 digits, got ${perDigit.length}`)
  const total = perDigit.reduce((n, d) => n + d.length, 0)
  const out = new Uint8Array(HEADER + total)
  out.set(MAGIC, 0)
  const view = new DataView(out.buffer)
  let at = HEADER
  perDigit.forEach((data, d) => {
    if (data.length % IMAGE_SIZE !== 0) throw new Error(`digit ${d} does not hold 28x28 images`)
    view.setUint32(4 + 4 * d, data.length / IMAGE_SIZE, true)
    for (let i = 0; i < data.length; i++) {
      const k = Math.round(data[i]! * 255)
      // refuse rather than silently change a pixel: the demo and the page must see the same digits
      if (!(k >= 0 && k <= 255) || levelOf(k) !== data[i]) throw new Error(`digit ${d}: pixel ${i} (${data[i]}) is not a package grey level`)
      out[at++] = k
    }
  })
  return out
}

/** Decodes the asset into each digit's images (grey levels in [0, 1], n x 784 each). */
export function decodeDigits(bytes: Uint8Array): Float32Array[] {
  if (bytes.length < HEADER || MAGIC.some((m, i) => bytes[i] !== m)) throw new Error('not an MNIST digits asset (no TMN1 header)')
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const levels = Float32Array.from({ length: 256 }, (_, k) => levelOf(k))
  const perDigit: Float32Array[] = []
  let at = HEADER
  for (let d = 0; d < 10; d++) {
    const n = view.getUint32(4 + 4 * d, true) * IMAGE_SIZE
    if (at + n > bytes.length) throw new Error(`the asset is truncated in digit ${d}`)
    const images = new Float32Array(n)
    for (let i = 0; i < n; i++) images[i] = levels[bytes[at + i]!]!
    perDigit.push(images)
    at += n
  }
  if (at !== bytes.length) throw new Error(`the asset has ${bytes.length - at} bytes after the last digit`)
  return perDigit
}
