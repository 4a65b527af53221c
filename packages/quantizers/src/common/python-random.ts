import { TesseraError } from '@tessera/core'

/**
 * CPython's `random.Random(seed).randrange(start, stop)` for an integer seed: MT19937 seeded by
 * `init_by_array` with the seed's 32-bit words, and `_randbelow` drawing `bit_length` bits until
 * one is below the range. The reference draws quantize dropout's cut-off this way from
 * `rand_quantize_dropout_fixed_seed`, so a given seed cuts where the reference cuts. Host-side
 * only (the seed is a number, not a traced value); each call builds its own generator.
 */
export function pythonRandrange(seed: number, start: number, stop: number): number {
  if (!Number.isSafeInteger(seed)) throw new TesseraError('input', 'pythonRandrange.seed', `must be a safe integer, got ${seed}`)
  const n = stop - start
  if (!Number.isSafeInteger(n) || n < 1 || n > 2 ** 32) throw new TesseraError('input', 'pythonRandrange', `empty or too wide range [${start}, ${stop})`)
  const next = mt19937(seedWords(Math.abs(seed)))
  const k = 32 - Math.clz32(n) + (n === 2 ** 32 ? 32 : 0)
  for (;;) {
    const r = k >= 32 ? next() : next() >>> (32 - k)
    if (r < n) return start + r
  }
}

/** The seed's 32-bit words, least significant first (CPython's `random_seed` for an int; 0 is [0]). */
function seedWords(s: number): number[] {
  const words: number[] = []
  let v = s
  do {
    words.push(v % 2 ** 32)
    v = Math.floor(v / 2 ** 32)
  } while (v > 0)
  return words
}

/** MT19937 after `init_by_array(key)`; returns the generator of 32-bit outputs. */
function mt19937(key: readonly number[]): () => number {
  const N = 624, M = 397
  const mt = new Uint32Array(N)
  mt[0] = 19650218
  for (let i = 1; i < N; i++) mt[i] = Math.imul(1812433253, mt[i - 1]! ^ (mt[i - 1]! >>> 30)) + i
  let i = 1, j = 0
  for (let k = Math.max(N, key.length); k > 0; k--) {
    mt[i] = (mt[i]! ^ Math.imul(mt[i - 1]! ^ (mt[i - 1]! >>> 30), 1664525)) + key[j]! + j
    i++
    j++
    if (i >= N) {
      mt[0] = mt[N - 1]!
      i = 1
    }
    if (j >= key.length) j = 0
  }
  for (let k = N - 1; k > 0; k--) {
    mt[i] = (mt[i]! ^ Math.imul(mt[i - 1]! ^ (mt[i - 1]! >>> 30), 1566083941)) - i
    i++
    if (i >= N) {
      mt[0] = mt[N - 1]!
      i = 1
    }
  }
  mt[0] = 0x80000000
  let idx = N
  return () => {
    if (idx >= N) {
      for (let kk = 0; kk < N; kk++) {
        const y = (mt[kk]! & 0x80000000) | (mt[(kk + 1) % N]! & 0x7fffffff)
        mt[kk] = mt[(kk + M) % N]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0)
      }
      idx = 0
    }
    let y = mt[idx++]!
    y ^= y >>> 11
    y ^= (y << 7) & 0x9d2c5680
    y ^= (y << 15) & 0xefc60000
    y ^= y >>> 18
    return y >>> 0
  }
}
