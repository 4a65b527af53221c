import type { NearestTuning } from './nearest.js'
import { QUEUE } from './wasm/threads.js'
import { SCREEN_STATE, screenParkBytes, screenVerdictBytes } from './nearest-screen.js'
import { INFO_BYTES, screenShape } from './nearest-scale.js'
import { affineInfoBytes } from './nearest-affine.js'

/** The nearest-code module's memory layout (nearest.ts): where the packed codebook, the staging buffers and the screening scratch go. */

/** Floats of A per staged chunk: a chunk's rows stay in L2 while every column chunk sweeps them. */
const CHUNK_FLOATS = 1 << 16
const MAX_CHUNK = 1024

export interface Geometry {
  readonly t: NearestTuning
  /** Columns per chunk (4 * vecs), columns padded to whole chunks, steps along k per dot-loop iteration. */
  readonly cw: number
  readonly npad: number
  readonly unroll: number
  /** Rows per staged chunk (a multiple of 4 * rows). */
  readonly chunk: number
  /** Byte addresses: column terms after the packed B panels, then the staging buffers; offsets within a buffer. */
  readonly col: number
  readonly base: number
  /** Byte address of the scratch for rows of a stored B^T on their way into the panels (after the buffers), and their count. */
  readonly packAt: number
  readonly packCols: number
  readonly buf: number
  readonly a: number
  readonly row: number
  readonly out: number
  /** Screening: within a buffer, the int16 rows (scales and bounds follow) and the screening state (a column chunk's int16 panel follows); the float32 state scratch of one register tile of rows. */
  readonly qa: number
  readonly qout: number
  readonly scratch: number
  /** Screening: npad + 4 floats of codebook statistics, and the scales the row and panel scaling read. */
  readonly statsAt: number
  readonly info: number
  /** Affine screening (nearest-affine.ts): npad column values after the column terms, and the per-call constants after info. */
  readonly affineAt: number
  readonly affineInfo: number
  /** Bytes of memory the module needs. */
  readonly bytes: number
  /** Threads the module is laid out for (staging buffers: one for the calling thread, QUEUE per worker). */
  readonly threads: number
}

export interface GeometryInput {
  readonly m: number
  readonly n: number
  readonly k: number
  readonly tuning: NearestTuning
  /** Counts of row and column terms. */
  readonly rowTerms: number
  readonly colTerms: number
  /** Whether the module has affine screening (nearest-affine.ts). */
  readonly affine: boolean
  /** Whether B is packed from the rows of a stored value (B^T) through a scratch. */
  readonly packsStoredRows: boolean
  /** Threads worth using for a chunk size. */
  readonly threads: (chunk: number) => number
}

export function nearestGeometry(p: GeometryInput): Geometry {
  const { k, m, tuning: t } = p
  const cw = 4 * t.vecs
  const npad = Math.ceil(p.n / cw) * cw
  let unroll = Math.min(t.unroll, k)
  while (k % unroll !== 0) unroll--
  const step = 4 * t.rows
  const chunk = Math.min(Math.ceil(Math.min(MAX_CHUNK, Math.max(1, Math.floor(CHUNK_FLOATS / k))) / step), Math.ceil(m / step)) * step
  const col = k * npad * 4
  const { k2 } = screenShape(k)
  const affineAt = col + p.colTerms * npad * 4
  const base = affineAt + (p.affine ? npad * 4 : 0)
  const row = chunk * k * 4
  const out = row + p.rowTerms * chunk * 4
  const qa = out + chunk * 3 * 16
  const qout = qa + chunk * (k2 + 2) * 4
  const buf = t.screen ? qout + chunk * SCREEN_STATE + screenVerdictBytes(chunk) + k2 * cw * 4 + screenParkBytes(t.rows, t.vecs) : qa
  // B^T's rows go through a scratch of about CHUNK_FLOATS floats, whole panels at a time
  const packCols = p.packsStoredRows ? Math.min(npad, cw * Math.max(1, Math.floor(CHUNK_FLOATS / (k * cw)))) : 0
  const T = p.threads(chunk)
  // staging buffers (one for the calling thread, QUEUE per worker), then the pack scratch
  const packAt = base + (1 + (T - 1) * QUEUE) * buf
  const scratch = packAt + packCols * k * 4
  const statsAt = scratch + t.rows * 3 * 16
  const info = statsAt + (t.screen ? (npad + 4) * 4 : 0)
  // float64 constants (writeAffine) need an 8-byte aligned start
  const affineInfo = Math.ceil((info + INFO_BYTES) / 8) * 8
  const bytes = p.affine ? affineInfo + affineInfoBytes(p.rowTerms) : info + (t.screen ? INFO_BYTES : 0)
  return { t, cw, npad, unroll, chunk, col, base, buf, a: 0, row, out, packAt, packCols, qa, qout, scratch, statsAt, info, affineAt, affineInfo, bytes, threads: T }
}
