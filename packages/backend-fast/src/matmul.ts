/**
 * Batched matmul on contiguous row-major operands, accumulating each output row in float64 in
 * the reference's order (k ascending) and rounding once: the products of two float32 values are
 * exact in float64, so the result is bit-identical to the reference's. The speed comes from
 * walking B row by row (unit stride) and reusing one float64 row accumulator.
 */
export function matmulF64(
  a: Float32Array,
  b: Float32Array,
  out: Float32Array,
  batch: number,
  m: number,
  k: number,
  n: number,
): void {
  const acc = new Float64Array(n)
  for (let bt = 0; bt < batch; bt++) {
    const aOff = bt * m * k, bOff = bt * k * n, oOff = bt * m * n
    for (let i = 0; i < m; i++) {
      acc.fill(0)
      const aRow = aOff + i * k
      for (let kk = 0; kk < k; kk++) {
        const av = a[aRow + kk]!
        const bRow = bOff + kk * n
        for (let j = 0; j < n; j++) acc[j] += av * b[bRow + j]!
      }
      const oRow = oOff + i * n
      for (let j = 0; j < n; j++) out[oRow + j] = acc[j]!
    }
  }
}
