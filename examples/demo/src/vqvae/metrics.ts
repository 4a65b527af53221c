import type { HostTensor } from '@tessera/core'

/**
 * Codebook statistics over a set of indices (n, tokens, codebooks): `usage` is the fraction of
 * (codebook, code) pairs used at least once; `perplexity` is exp(entropy) of each codebook's
 * code frequencies, averaged over codebooks (K when every code is equally used, 1 when one is).
 */
export interface CodeStats {
  readonly usage: number
  readonly perplexity: number
  readonly counts: readonly Float64Array[]
}

export function codeCounts(indices: readonly HostTensor[], codebooks: number, codebookSize: number): Float64Array[] {
  const counts = Array.from({ length: codebooks }, () => new Float64Array(codebookSize))
  for (const t of indices) {
    const d = t.data
    for (let i = 0; i < d.length; i++) {
      const k = d[i]!
      if (k >= 0 && k < codebookSize) counts[i % codebooks]![k]! += 1
    }
  }
  return counts
}

export function codeStats(indices: readonly HostTensor[], codebooks: number, codebookSize: number): CodeStats {
  const counts = codeCounts(indices, codebooks, codebookSize)
  let used = 0
  let perplexity = 0
  for (const c of counts) {
    const total = c.reduce((a, b) => a + b, 0)
    let h = 0
    for (const n of c) {
      if (n > 0) {
        used++
        const p = n / total
        h -= p * Math.log(p)
      }
    }
    perplexity += Math.exp(h)
  }
  return { usage: used / (codebooks * codebookSize), perplexity: perplexity / codebooks, counts }
}

export function mse(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < a.length; i++) {
    const e = a[i]! - b[i]!
    s += e * e
  }
  return s / a.length
}
