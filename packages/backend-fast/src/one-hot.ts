import type { Eqn, Var } from '@tessera/core'
import type { GeneratedKernel } from './loops.js'

/**
 * Products and sums of a one-hot matrix built from indices, `cast(eq(idx[t], iota[c]))` over
 * tokens t and codes c, as VectorQuantize's EMA update writes them: the codes' sums
 * `transpose(onehot) · x` (a T x C x D product where each token adds to one code) and their
 * counts `sum_t onehot` (T x C compares). Here each token's row is added to its code's sum, in
 * token order, in float64 rounded once: the reference's float64 product adds the same nonzero
 * terms in the same order (its zero terms change nothing, as its sum starts at +0). Where a row
 * value is not finite the product has 0 x Inf or 0 x NaN terms: its column is then NaN for every
 * code but the one token's, as the reference's is.
 */
export interface OneHot {
  /** The token indices (int32, T of them, stored) and the number of codes. */
  readonly idx: Var
  readonly codes: number
}

export interface OneHotGraph {
  def(v: Var): Eqn | undefined
  isStored(v: Var): boolean
}

const size = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)
/** Through reshapes to a value's origin. */
const unshaped = (v: Var, g: OneHotGraph): Var => {
  let x = v
  for (let d = g.def(x); d && d.prim === 'reshape' && !g.isStored(x); d = g.def(x)) x = d.inputs[0]!
  return x
}

/**
 * `v` as a one-hot matrix (shape [1, T, C] or [T, C]): cast to float32 of eq of the indices
 * (stored int32 of T elements, reshaped to [.., T, 1] and broadcast) and an iota over the last
 * axis (broadcast), either way round.
 */
export function matchOneHot(v: Var, g: OneHotGraph): OneHot | undefined {
  const s = v.aval.shape
  if (v.aval.dtype !== 'float32' || s.length < 2 || s.slice(0, -2).some((d) => d !== 1)) return undefined
  const [T, C] = [s[s.length - 2]!, s[s.length - 1]!]
  const cast = g.def(v)
  if (!cast || cast.prim !== 'cast') return undefined
  const eq = g.def(cast.inputs[0]!)
  if (!eq || eq.prim !== 'eq' || g.isStored(cast.inputs[0]!)) return undefined
  const side = (x: Var): { kind: 'idx'; idx: Var } | { kind: 'iota' } | undefined => {
    const b = g.def(x)
    if (!b || b.prim !== 'broadcast' || g.isStored(x)) return undefined
    const src = b.inputs[0]!
    const ss = src.aval.shape
    const sd = g.def(src)
    // an iota over the codes: [C] or [.., 1, C]
    if (sd && sd.prim === 'iota' && sd.params.axis === ss.length - 1 && ss[ss.length - 1] === C && size(src) === C && src.aval.dtype === 'int32') return { kind: 'iota' }
    // the indices: [.., T, 1] of stored int32 (through reshapes)
    if (ss.length >= 2 && ss[ss.length - 1] === 1 && ss[ss.length - 2] === T && size(src) === T) {
      const idx = unshaped(src, g)
      if (g.isStored(idx) && idx.aval.dtype === 'int32' && size(idx) === T) return { kind: 'idx', idx }
    }
    return undefined
  }
  const [a, b] = [side(eq.inputs[0]!), side(eq.inputs[1]!)]
  if (!a || !b || a.kind === b.kind) return undefined
  const idx = a.kind === 'idx' ? a.idx : (b as { idx: Var }).idx
  return { idx, codes: C }
}

/**
 * `transpose(onehot) · x` (matmul of [1, C, T] by [1, T, D], or without the leading 1): the
 * one-hot and x, where `m` is such a product.
 */
export function matchOneHotProduct(m: Eqn, g: OneHotGraph): { oneHot: OneHot; x: Var; transposed: Var } | undefined {
  if (m.prim !== 'matmul') return undefined
  const [a, x] = m.inputs as [Var, Var]
  const r = a.aval.shape.length
  const t = g.def(a)
  if (!t || t.prim !== 'transpose' || x.aval.dtype !== 'float32' || a.aval.shape.slice(0, -2).some((d) => d !== 1)) return undefined
  const perm = t.params.perm
  if (perm.some((p, i) => (i < r - 2 ? p !== i : p !== (i === r - 2 ? r - 1 : r - 2)))) return undefined
  const oneHot = matchOneHot(t.inputs[0]!, g)
  return oneHot ? { oneHot, x, transposed: a } : undefined
}

/** `sum_t onehot` (a reduce_sum over the token axis): the one-hot, where `e` is such a sum. */
export function matchOneHotCounts(e: Eqn, g: OneHotGraph): OneHot | undefined {
  if (e.prim !== 'reduce_sum') return undefined
  const v = e.inputs[0]!
  const r = v.aval.shape.length
  const axes = e.params.axes
  if (axes.length !== 1 || axes[0] !== r - 2) return undefined
  return matchOneHot(v, g)
}

/**
 * The codes' sums of x's rows (T x D) by token index into out (C x D), as OneHot describes;
 * `acc` (C x D float64, overwritten) is the sums' scratch.
 */
export function oneHotProduct(idx: Int32Array, x: Float32Array, out: Float32Array, codes: number, acc: Float64Array = new Float64Array(out.length)): void {
  const T = idx.length, D = x.length / T
  acc.fill(0)
  // per column, the one code whose tokens hold its values that are not finite (-2: none; -1:
  // tokens of two codes, or one of none): 0 x such a value is NaN in every other code's sum
  const owner = new Int32Array(D).fill(-2)
  for (let t = 0; t < T; t++) {
    const c = idx[t]!
    const mine = c >= 0 && c < codes
    for (let d = 0, o = c * D, i = t * D; d < D; d++) {
      const v = x[i + d]!
      if (mine) acc[o + d]! += v
      if (v - v !== 0) {
        const w = owner[d]!
        owner[d] = w === -1 || !mine || (w !== -2 && w !== c) ? -1 : c
      }
    }
  }
  for (let i = 0; i < acc.length; i++) out[i] = acc[i]!
  for (let d = 0; d < D; d++) {
    const w = owner[d]!
    if (w !== -2) for (let c = 0; c < codes; c++) if (c !== w) out[c * D + d] = NaN
  }
}

/** The number of tokens of each code into out (C). */
export function oneHotCounts(idx: Int32Array, out: Float32Array, codes: number): void {
  out.fill(0)
  for (let t = 0; t < idx.length; t++) {
    const c = idx[t]!
    if (c >= 0 && c < codes) out[c]!++
  }
}

/** Kernels for plan steps: the product's and the counts' (slots of the indices, x and the result). */
export function oneHotProductKernel(idxSlot: number, xSlot: number, out: number, codes: number): GeneratedKernel {
  // the float64 sums, kept between calls (fresh memory costs page faults every call)
  let acc: Float64Array | undefined
  return {
    source: `/* one-hot product: codes' sums of b${xSlot}'s rows by b${idxSlot} into b${out} */`,
    fn: (B) => {
      const o = B[out] as Float32Array
      if (acc?.length !== o.length) acc = new Float64Array(o.length)
      oneHotProduct(B[idxSlot] as Int32Array, B[xSlot] as Float32Array, o, codes, acc)
    },
  }
}

export function oneHotCountsKernel(idxSlot: number, out: number, codes: number): GeneratedKernel {
  return {
    source: `/* one-hot counts: tokens of each code in b${idxSlot} into b${out} */`,
    fn: (B) => oneHotCounts(B[idxSlot] as Int32Array, B[out] as Float32Array, codes),
  }
}
