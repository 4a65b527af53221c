/**
 * The bit-tree form of a row chain's small-k matmul `a [n, k] @ b [k, w]`, for right operands with
 * the shape of a binary codebook: w = 2^k and every row t of b holding only two values, picked by
 * bit (k - 1 - t) of the column index j (b[t][j] = bit ? hi_t : lo_t, compared bit for bit). LFQ's
 * codebook transposed (code j, dimension t: ±scale by that bit) is one, for any scale.
 *
 * The plain form computes each output as the float64 sum, in t order from +0, of the exact
 * products a_t * b[t][j], rounded once to float32. For such an operand the partial sums over
 * t = 0..s depend only on the top s + 1 bits of j, so all w outputs of a row come from a prefix
 * tree: node i of level s is node i >> 1 of level s - 1 plus a_s * (i & 1 ? hi_s : lo_s). Every
 * output is then the same sequence of float64 additions of the same products as in the plain
 * form (the same bits, NaN and infinities included), for about 2w additions per row instead of
 * k * w multiply-adds.
 */

/** Inner sizes the tree form takes: w = 2^k outputs, at least one float32x4 of them. */
export const bitTreeApplies = (k: number, w: number): boolean => k >= 2 && k <= 24 && w === 2 ** k

/**
 * The pairs (lo_t, hi_t) of a row-major [k, 2^k] operand as float64 [lo_0, hi_0, lo_1, ...], or
 * undefined when some element is neither of its row's two values (compared as float32 bits, so
 * -0 is not +0 and NaNs must match exactly). O(k 2^k).
 */
export function bitTreePairs(b: Float32Array, k: number): Float64Array | undefined {
  const w = 2 ** k
  if (!bitTreeApplies(k, w) || b.length !== k * w) return undefined
  const bits = new Uint32Array(b.buffer, b.byteOffset, b.length)
  const pairs = new Float64Array(2 * k)
  for (let t = 0; t < k; t++) {
    const row = t * w, shift = k - 1 - t
    const lo = bits[row]!, hi = bits[row + (1 << shift)]!
    for (let j = 0; j < w; j++) if (bits[row + j] !== ((j >> shift) & 1 ? hi : lo)) return undefined
    pairs[2 * t] = b[row]!
    pairs[2 * t + 1] = b[row + (1 << shift)]!
  }
  return pairs
}
