import type { Eqn, Var } from '@tessera/core'
import type { ConstPool } from './simd-ops.js'

/** A row-indexed or whole region: byte address and float32 elements per row (whole: in all). */
export interface Region {
  readonly addr: number
  readonly elems: number
}

/** Why a chain has no WebAssembly form (the caller runs the generated JS chain instead). */
export class Unsupported extends Error {}

/** The control word that holds a call's form (see chain-codegen.ts's control words). */
export const CTRL_MODE = 2

export const elems = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)
/** Index modes of an expression's four lanes (see `Gen.value`). */
export type Mode = 'row' | 'rowSplat' | 'whole' | 'wholeSplat'

export interface ChainGraph {
  def(v: Var): Eqn | undefined
  isStored(v: Var): boolean
}

export interface Places {
  readonly pool: ConstPool
  /** Matmul right operands, packed (see WasmChainLayout.copyPacked). */
  readonly packed: ReadonlyMap<number, Region>
  /**
   * Matmul right operands with a bit-tree form (chain-bittree.ts): where the call writes their
   * (lo, hi) float64 pairs, and the offset of the prefix sums' row in a thread's scratch area.
   */
  readonly trees: ReadonlyMap<number, { readonly pairs: number; readonly scratch: number }>
  readonly whole: ReadonlyMap<number, Region>
  readonly views: ReadonlyMap<number, Region>
  /** Offset of each chain-local value's row in a thread's scratch area. */
  readonly locals: ReadonlyMap<number, number>
  readonly sinks: readonly { readonly addr: number; readonly width: number; readonly stride: number }[]
  /** Offset in a thread's scratch area of room for a row of float32 and a list of its vectors (the split exp pass). */
  readonly spare: number
  readonly scratchBase: number
  readonly scratchSize: number
  readonly rows: number
  readonly blocks: number
}

