import type { RowChain, Var } from '@tessera/core'
import { assemble } from './asm.js'
import { ChainEmitter } from './chain-emit.js'
import { ConstPool } from './simd-ops.js'
import type { ChainGraph, Region } from './chain-types.js'
import { Unsupported, elems } from './chain-types.js'
import { bitTreeApplies } from './chain-bittree.js'

export type { ChainGraph, Region } from './chain-types.js'

/**
 * A row chain (core's `RowChain`) compiled to one WebAssembly module that runs every step of the
 * chain row by row: for each row of a block, each step's loop over that row in float32x4 lanes,
 * so a value used only inside the chain needs one row of memory (L1-sized: softmax's logits,
 * exponentials and probabilities of a 1024-code row are 4 KiB each) and is never stored in full.
 * Elementwise float32 ops are the reference's ops lane by lane (they round as Math.fround
 * does); exp and log are simd-math.ts's (at most one ulp); a small-k matmul adds each
 * output's products in float64 in order and rounds once (the reference's bits); sums over a row accumulate in float64 lanes (a different association than the
 * reference's one running sum, so not bit-identical); sums over the leading axis (sinks) add
 * rows in order into float64 partials per block, which the caller adds in block order, so
 * results do not depend on how many threads ran the blocks.
 *
 * Memory (one shared memory; every thread runs `run(thread)` on it): control words, the values
 * read whole, the row-indexed values read or written in full (views), each sink's partials (one
 * row of float64 per block), then one scratch area per thread holding a row of each
 * chain-local value. Every region has 16 bytes of slack after it: the last float32x4 of a row
 * may read up to 3 elements past its end (those lanes are never used, and never stored past a
 * view row's end, which another thread may own).
 */

/** What the runner needs: the module and where each slot's data lives. */
export interface WasmChainLayout {
  readonly module: WebAssembly.Module
  readonly pages: number
  readonly n: number
  /** Rows per block and blocks (fixed by n alone, so partials add up the same for any thread count). */
  readonly rows: number
  readonly blocks: number
  readonly threads: number
  /** Values copied in before a call: row-indexed inputs and values read whole (slot, region). */
  readonly copyIn: readonly (readonly [Var, Region])[]
  /**
   * Matmul right operands [k, w], copied in packed as float64: output vector j (4 columns) of row
   * t at addr + 32 (j k + t), two float64x2 (the last vector zero-padded).
   */
  readonly copyPacked: readonly (readonly [Var, Region, number])[]
  /**
   * Matmul right operands [k, 2^k] that may take the bit-tree form (chain-bittree.ts): a call
   * whose every such operand has it writes their pairs at `pairs` (2k float64) and sets
   * CTRL_MODE to 1, which runs `blockTree` (their matmuls as prefix trees) instead of `block`.
   */
  readonly trees: readonly { readonly operand: Var; readonly pairs: number; readonly k: number }[]
  /** Exp passes run as two loops (chain-emit.ts's splitExp; tests check it was taken). */
  readonly splitExpPasses: number
  /** Passes of sums that may skip the vectors a split exp pass left at +0 (chain-emit.ts's sparsePass). */
  readonly sparsePasses: number
  /** Row-indexed values the chain writes in full, copied out after a call. */
  readonly copyOut: readonly (readonly [Var, Region])[]
  /** The constant pool's bytes, written into the memory once. */
  readonly constants: { readonly addr: number; readonly bytes: Uint8Array }
  /** Sinks: output variable, address of block 0's partials, float64 elements per block (stride rounded up to 4). */
  readonly sinks: readonly { readonly out: Var; readonly addr: number; readonly width: number; readonly stride: number }[]
}

const align16 = (x: number) => Math.ceil(x / 16) * 16
const SLACK = 16
const MAX_BYTES = 1536 * 2 ** 20
/** Blocks per call at most: the sinks' partials take blocks x width float64. */
const MAX_BLOCKS = 256
/** Bytes for vector constants (256 of them; a chain uses a few dozen). */
const POOL_BYTES = 4096
/**
 * Control words: [0] the next block to claim, [1] blocks done, [2] the call's form (1: bit trees),
 * [4 + t] blocks thread t ran (64 bytes in all).
 */
export const CTRL_THREADS = 12
export { CTRL_MODE } from './chain-types.js'

/**
 * The module for `rc`, or undefined when some step or op has no WebAssembly form here (other
 * dtypes, index remaps within a row, ops beyond float32 arithmetic, exp and log).
 */
export function wasmChainLayout(rc: RowChain, g: ChainGraph, threads: number): WasmChainLayout | undefined {
  try {
    return build(rc, g, threads)
  } catch (e) {
    if (e instanceof Unsupported) return undefined
    throw e
  }
}

function build(rc: RowChain, g: ChainGraph, threads: number): WasmChainLayout {
  const { n } = rc
  const rowElems = (v: Var) => elems(v) / n
  const all = [...rc.views, ...rc.local, ...rc.wholeReads]
  if (all.some((v) => v.aval.dtype !== 'float32' || elems(v) === 0)) throw new Unsupported()
  const rows = Math.max(rc.rows, Math.ceil(n / MAX_BLOCKS))
  const blocks = Math.ceil(n / rows)
  if (threads > CTRL_THREADS) throw new Unsupported()
  // control words, then the constant pool
  const pool = new ConstPool(64, POOL_BYTES)
  let top = 64 + POOL_BYTES
  const region = (bytes: number) => {
    const a = top
    top = align16(top + bytes + SLACK)
    return a
  }
  const whole = new Map<number, Region>()
  const copyIn: (readonly [Var, Region])[] = []
  for (const v of rc.wholeReads) {
    const r = { addr: region(4 * elems(v)), elems: elems(v) }
    whole.set(v.id, r)
    copyIn.push([v, r])
  }
  // a matmul's right operand, packed so that the k vectors one output vector needs are adjacent
  // (row-major, its rows would be 4 KiB apart for 1024 codes: one L1 set for all k of them)
  const packed = new Map<number, Region>()
  const copyPacked: (readonly [Var, Region, number])[] = []
  for (const c of rc.steps) {
    if (c.step.kind !== 'matmul' || packed.has(c.step.eqn.inputs[1]!.id)) continue
    const b = c.step.eqn.inputs[1]!
    const [k, w] = [b.aval.shape[0] ?? 1, b.aval.shape[1] ?? 1]
    const r = { addr: region(32 * k * Math.ceil(w / 4)), elems: w }
    packed.set(b.id, r)
    copyPacked.push([b, r, k])
  }
  const treeList = copyPacked.filter(([b, , k]) => bitTreeApplies(k, b.aval.shape[1] ?? 1)).map(([b, , k]) => ({ operand: b, pairs: region(16 * k), k }))
  const views = new Map<number, Region>()
  const fullIds = new Set(rc.full.map((v) => v.id))
  const copyOut: (readonly [Var, Region])[] = []
  for (const v of rc.views) {
    const r = { addr: region(4 * elems(v)), elems: rowElems(v) }
    views.set(v.id, r)
    if (fullIds.has(v.id)) copyOut.push([v, r])
    else copyIn.push([v, r])
  }
  const sinks: { out: Var; addr: number; width: number; stride: number }[] = []
  for (const c of rc.steps) {
    if (!c.sink || c.step.kind !== 'reduce') continue
    const e = c.step.eqn
    const src = e.inputs[0]!
    const axes = (e.params as { axes: readonly number[] }).axes
    const width = axes.length === src.aval.shape.length ? 1 : axes.length === 1 ? rowElems(src) : -1
    if (e.prim !== 'reduce_sum' || width < 0) throw new Unsupported()
    const stride = Math.ceil(width / 4) * 4
    sinks.push({ out: e.out, addr: region(8 * stride * blocks), width, stride })
  }
  const scratchBase = top
  const locals = new Map<number, number>()
  let scratch = 0
  for (const v of rc.local) {
    locals.set(v.id, scratch)
    scratch = align16(scratch + 4 * rowElems(v) + SLACK)
  }
  // a tree's prefix sums above its last two levels: 2^(k-2) float64 per row
  const trees = new Map<number, { pairs: number; scratch: number }>()
  for (const t of treeList) {
    trees.set(t.operand.id, { pairs: t.pairs, scratch })
    scratch = align16(scratch + 8 * 2 ** (t.k - 2) + SLACK)
  }
  // room for a split exp pass (chain-emit.ts): a row of float32 arguments and a list of its vectors
  const spare = scratch
  const maxW = Math.max(0, ...[...rc.local, ...rc.views].map(rowElems))
  scratch = align16(scratch + 5 * maxW + 2 * SLACK)
  const scratchSize = Math.max(16, scratch)
  top = scratchBase + threads * scratchSize
  if (top > MAX_BYTES) throw new Unsupported()
  const pages = Math.max(1, Math.ceil(top / 65536))
  const places = { pool, packed, trees, spare, whole, views, locals, sinks, scratchBase, scratchSize, rows, blocks }
  const gen = new ChainEmitter(rc, g, places, false)
  const funcs = [{ name: 'run', code: gen.runCode(treeList.length > 0) }, { name: 'block', code: gen.blockCode() }]
  const { splitPasses: splitExpPasses, sparsePasses } = gen
  // the same chain with its bit-tree matmuls as prefix trees (a fresh emitter: locals are per function)
  if (treeList.length > 0) funcs.push({ name: 'blockTree', code: new ChainEmitter(rc, g, places, true).blockCode() })
  const module = new WebAssembly.Module(assemble(pages, funcs) as BufferSource)
  return {
    module, pages, n, rows, blocks, threads, copyIn, copyPacked, trees: treeList, copyOut, sinks, splitExpPasses, sparsePasses,
    constants: { addr: pool.base, bytes: new Uint8Array(pool.bytes) },
  }
}
