/**
 * Batched matmul on contiguous row-major operands, accumulating each output in float64 in the
 * reference's order (k ascending) and rounding once: the products of two float32 values are
 * exact in float64, so the result is bit-identical to the reference's.
 *
 * When one batch's B is small enough to stay in cache, each output tile of 2 rows x 4 columns is
 * accumulated in locals (8 float64 registers, every A and B element loaded once per tile): this is
 * the shape of the nearest-code logits (k = 16..64, n = 1024). Inner dimensions up to 16 (LFQ's
 * logits, k = 10) take a loop generated for k instead (matmul 0.8x at k = 10). Otherwise B is streamed
 * row by row into a float64 row accumulator (unit stride, B read once per output row).
 */
export function matmulFactory(): { matmulF64: typeof matmulF64Type } {
  function matmulF64(
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    batch: number,
    m: number,
    k: number,
    n: number,
  ): void {
    if (k <= SMALL_K && k * n <= BLOCKED_MAX_B && m >= 2) {
      for (let bt = 0; bt < batch; bt++) smallK(a, b, out, bt * m * k, bt * k * n, bt * m * n, m, k, n)
      return
    }
    if (k * n <= BLOCKED_MAX_B && n >= 4) {
      for (let bt = 0; bt < batch; bt++) blocked(a, b, out, bt * m * k, bt * k * n, bt * m * n, m, k, n)
      return
    }
    const acc = new Float64Array(n)
    // four output rows at a time share each streamed row of B (a quarter of the B traffic);
    // every output still adds its k terms in order into its own float64 accumulator
    const acc4 = m >= 4 ? new Float64Array(4 * n) : acc
    for (let bt = 0; bt < batch; bt++) {
      const aOff = bt * m * k, bOff = bt * k * n, oOff = bt * m * n
      let i0 = 0
      for (; i0 + 3 < m; i0 += 4) {
        acc4.fill(0)
        const r0 = aOff + i0 * k, r1 = r0 + k, r2 = r1 + k, r3 = r2 + k
        for (let kk = 0; kk < k; kk++) {
          const x0 = a[r0 + kk]!, x1 = a[r1 + kk]!, x2 = a[r2 + kk]!, x3 = a[r3 + kk]!
          const bRow = bOff + kk * n
          for (let j = 0, j1 = n, j2 = 2 * n, j3 = 3 * n; j < n; j++, j1++, j2++, j3++) {
            const y = b[bRow + j]!
            acc4[j] += x0 * y
            acc4[j1] += x1 * y
            acc4[j2] += x2 * y
            acc4[j3] += x3 * y
          }
        }
        const o = oOff + i0 * n
        for (let j = 0; j < 4 * n; j++) out[o + j] = acc4[j]!
      }
      for (let i = i0; i < m; i++) {
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

  /** Inner dimensions up to which `smallK` (k unrolled, A's rows in locals) is used. */
  const SMALL_K = 16
  type SmallK = (a: Float32Array, bt: Float64Array, out: Float32Array, aOff: number, oOff: number, m: number, n: number) => void
  // generated loops by k (a memo: the source depends on k alone)
  const smallKFns = new Map<number, SmallK>()

  /**
   * A small inner dimension (LFQ logits: k = 10): B transposed into float64 (column j's k values
   * adjacent), a loop generated for this k with two rows of A held in locals, each output's k
   * products added in order into a float64 started at 0 (the order and rounding of the others).
   */
  function smallK(a: Float32Array, b: Float32Array, out: Float32Array, aOff: number, bOff: number, oOff: number, m: number, k: number, n: number): void {
    const bt = new Float64Array(k * n)
    for (let t = 0; t < k; t++) for (let j = 0, p = bOff + t * n; j < n; j++) bt[j * k + t] = b[p + j]!
    let f = smallKFns.get(k)
    if (!f) {
      const ts = Array.from({ length: k }, (_, t) => t)
      const src = [
        'return function (a, bt, out, aOff, oOff, m, n) {',
        'let i = 0;',
        'for (; i + 1 < m; i += 2) {',
        `const ar = aOff + i * ${k}, o = oOff + i * n;`,
        ...ts.map((t) => `const x${t} = a[ar + ${t}], z${t} = a[ar + ${k + t}];`),
        `for (let j = 0, bp = 0; j < n; j++, bp += ${k}) {`,
        'let s = 0, u = 0;',
        ...ts.map((t) => `{ const y = bt[bp + ${t}]; s += x${t} * y; u += z${t} * y; }`),
        'out[o + j] = s; out[o + n + j] = u;',
        '}',
        '}',
        'for (; i < m; i++) {',
        `const ar = aOff + i * ${k}, o = oOff + i * n;`,
        `for (let j = 0, bp = 0; j < n; j++, bp += ${k}) {`,
        'let s = 0;',
        ...ts.map((t) => `s += a[ar + ${t}] * bt[bp + ${t}];`),
        'out[o + j] = s;',
        '}',
        '}',
        '}',
      ].join('\n')
      f = new Function(src)() as SmallK
      smallKFns.set(k, f)
    }
    f(a, bt, out, aOff, oOff, m, n)
  }

  /** B elements (float32) up to which the register-tiled loop is used: 64K floats = 256 KiB, about L2. */
  const BLOCKED_MAX_B = 65536

  function blocked(a: Float32Array, b: Float32Array, out: Float32Array, aOff: number, bOff: number, oOff: number, m: number, k: number, n: number): void {
    const n4 = n - (n % 4)
    let i = 0
    for (; i + 1 < m; i += 2) {
      const a0 = aOff + i * k, a1 = a0 + k
      const o0 = oOff + i * n, o1 = o0 + n
      for (let j = 0; j < n4; j += 4) {
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0
        let bp = bOff + j
        for (let kk = 0; kk < k; kk++, bp += n) {
          const x0 = a[a0 + kk]!, x1 = a[a1 + kk]!
          const y0 = b[bp]!, y1 = b[bp + 1]!, y2 = b[bp + 2]!, y3 = b[bp + 3]!
          s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3
          s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3
        }
        out[o0 + j] = s00; out[o0 + j + 1] = s01; out[o0 + j + 2] = s02; out[o0 + j + 3] = s03
        out[o1 + j] = s10; out[o1 + j + 1] = s11; out[o1 + j + 2] = s12; out[o1 + j + 3] = s13
      }
      for (let j = n4; j < n; j++) {
        let s0 = 0, s1 = 0
        for (let kk = 0, bp = bOff + j; kk < k; kk++, bp += n) {
          s0 += a[a0 + kk]! * b[bp]!
          s1 += a[a1 + kk]! * b[bp]!
        }
        out[o0 + j] = s0; out[o1 + j] = s1
      }
    }
    for (; i < m; i++) {
      const a0 = aOff + i * k, o0 = oOff + i * n
      for (let j = 0; j < n; j++) {
        let s = 0
        for (let kk = 0, bp = bOff + j; kk < k; kk++, bp += n) s += a[a0 + kk]! * b[bp]!
        out[o0 + j] = s
      }
    }
  }

  return { matmulF64 }
}

declare function matmulF64Type(a: Float32Array, b: Float32Array, out: Float32Array, batch: number, m: number, k: number, n: number): void

/** Self-contained (worker threads rebuild it from `matmulFactory.toString()`, see chain-runner.ts). */
export const { matmulF64 } = matmulFactory()
