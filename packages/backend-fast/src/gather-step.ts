import type { AnyTypedArray, Eqn, HostTensor } from '@tessera/core'
import { TesseraError, applyPrim } from '@tessera/core'
import type { ScanEnv, ScanStep } from './scan-steps.js'
import { int32Bits, rowGatherOn } from './wasm/row-gather.js'
import type { RowGather } from './wasm/row-gather.js'
import type { GatheredRead } from './wasm/elementwise.js'

/**
 * `gather` of whole rows (x's elements after the gathered axis, nothing before it) of a float32
 * or int32 table by int32 indices, as row copies into the step's buffer instead of the reference
 * evaluator's fresh array: a WebAssembly `memory.copy` per row where the table is no larger than
 * the result and at most 1 MiB (a codebook gathered by a search's indices; the table and indices
 * are copied in, the rows out a chunk at a time), else JS copies over int32 views. Copies move bits, so float32
 * NaN payloads stay as they are. An index outside the axis stops the copy and the reference
 * evaluator is run on the same operands, so the error is the reference's (the first bad index).
 */
export interface GatherSteps {
  /**
   * The copy step for a host step's gather, or undefined where the form is not one of these;
   * `fused` is how an elementwise pass may gather the rows itself instead (elementwise.ts's
   * gathered operands), where the table is small enough to copy into its memory.
   */
  step(e: Eqn): (ScanStep & { readonly fused?: GatheredRead }) | undefined
}

/** Header (the first bad position, or -1), then table, indices and a chunk of result rows. */
const HEAD = 16
/** Bytes of rows gathered per call before they are copied out. */
const CHUNK_BYTES = 1 << 16
/** Most bytes the copy memory may hold (larger gathers take the JS loop). */
const MAX_BYTES = 1 << 30
/**
 * Largest table copied into the copy memory: the memory stays resident for the plan's life, so a
 * large codebook would be held twice; larger tables take the JS copies.
 */
const MAX_TABLE_BYTES = 1 << 20
/** Row length from which the JS path copies a row with one `set` instead of element by element. */
const SET_MIN = 64
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** A copy memory of at least `bytes` and its gather function. */
interface Copier {
  readonly mem: WebAssembly.Memory
  readonly gather: RowGather
}

function copier(bytes: number): Copier {
  const pages = Math.max(1, Math.ceil(bytes / 65536))
  const mem = new WebAssembly.Memory({ initial: pages, maximum: pages })
  return { mem, gather: rowGatherOn(mem, pages) }
}

/** The first bad position, or -1 once every row is copied (ints: bits move unchanged). */
function jsGather(x: Int32Array, ix: Int32Array, out: Int32Array, d: number, inner: number): number {
  if (inner >= SET_MIN) {
    for (let j = 0; j < ix.length; j++) {
      const v = ix[j]!
      if (v < 0 || v >= d) return j
      out.set(x.subarray(v * inner, v * inner + inner), j * inner)
    }
    return -1
  }
  for (let j = 0, p = 0; j < ix.length; j++) {
    const v = ix[j]!
    if (v < 0 || v >= d) return j
    for (let s = v * inner, e = s + inner; s < e; s++, p++) out[p] = x[s]!
  }
  return -1
}

/**
 * Gather steps for one plan; they share one copy memory, made on the first run at the size of
 * the largest of them (sizes are the plan's, fixed).
 */
export function gatherSteps(env: ScanEnv, wasm: boolean): GatherSteps {
  let need = 0
  let mem: Copier | undefined
  const wasmCopier = () => (mem ??= copier(need))
  return {
    step(e) {
      if (e.prim !== 'gather') return undefined
      const [x, idx] = e.inputs as [typeof e.out, typeof e.out]
      const axis = (e.params as { axis: number }).axis
      const dt = x.aval.dtype
      if ((dt !== 'float32' && dt !== 'int32') || idx.aval.dtype !== 'int32' || sizeOf(x.aval.shape.slice(0, axis)) !== 1) return undefined
      const d = x.aval.shape[axis]!
      const inner = sizeOf(x.aval.shape.slice(axis + 1))
      const ni = sizeOf(idx.aval.shape)
      const [tabBytes, ixBytes, outBytes] = [4 * d * inner, 4 * ni, 4 * ni * inner]
      // rows are gathered a chunk at a time into a buffer that stays in cache, then copied out
      const chunkRows = Math.max(1, Math.min(ni, Math.floor(CHUNK_BYTES / (4 * inner))))
      const bytes = HEAD + tabBytes + ixBytes + 4 * chunkRows * inner
      // the table is copied in whole every call: only where that is no more than the rows copied out
      const inWasm = wasm && inner >= 4 && tabBytes <= outBytes && tabBytes <= MAX_TABLE_BYTES && bytes <= MAX_BYTES
      if (inWasm) need = Math.max(need, bytes)
      const [sx, si, so] = [env.slotOf(x), env.slotOf(idx), env.slotOf(e.out)]
      const fail = (B: readonly ArrayLike<number>[]): never => {
        const ins = [x, idx].map((v, i) => ({ shape: v.aval.shape, dtype: v.aval.dtype, data: B[[sx, si][i]!]! }) as HostTensor)
        applyPrim('gather', ins, { axis }, e.out.aval)
        throw new TesseraError('runtime', 'gather', 'an index is out of range')
      }
      const fn = inWasm
        ? (B: AnyTypedArray[]) => {
            const c = wasmCopier()
            const buf = c.mem.buffer
            const at = HEAD + tabBytes, outAt = at + ixBytes
            new Int32Array(buf, HEAD, d * inner).set(int32Bits(B[sx]!))
            new Int32Array(buf, at, ni).set(B[si] as Int32Array)
            const out = int32Bits(B[so]!), chunk = new Int32Array(buf, outAt, chunkRows * inner)
            for (let j = 0; j < ni; j += chunkRows) {
              const rows = Math.min(chunkRows, ni - j)
              c.gather(HEAD, at + 4 * j, outAt, rows, 4 * inner, d, 0)
              if (new Int32Array(buf, 0, 1)[0]! >= 0) fail(B)
              out.set(rows === chunkRows ? chunk : chunk.subarray(0, rows * inner), j * inner)
            }
          }
        : (B: AnyTypedArray[]) => {
            if (jsGather(int32Bits(B[sx]!), B[si] as Int32Array, int32Bits(B[so]!), d, inner) >= 0) fail(B)
          }
      const fused = wasm && tabBytes <= MAX_TABLE_BYTES ? { table: sx, index: si, inner, d, fail } : undefined
      return { out: so, prim: e.prim, kernel: { source: `/* gather rows (${inWasm ? 'wasm' : 'js'}) */`, fn }, ...(fused ? { fused } : {}) }
    },
  }
}
