/**
 * Counter-based random numbers: element i of a draw depends only on (key, i), so every backend
 * (and every kernel split) draws the same numbers for the same key. The mixer is murmur3's
 * 32-bit finalizer; draws keep the top 24 bits so they are exact float32 values in [0, 1).
 */
export type Key = readonly [number, number]

function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** Per-key stream seed. */
export function keySeed(k0: number, k1: number): number {
  return fmix32((k0 ^ fmix32((k1 + 0x632be5ab) | 0)) >>> 0)
}

/** The 32 random bits of element `i` of a draw with the given stream seed. */
export function randomBits(seed: number, i: number): number {
  const x = fmix32((Math.imul(i, 0x9e3779b9) + seed) >>> 0)
  return fmix32((x ^ seed ^ 0x27d4eb2f) >>> 0)
}

export function uniformAt(seed: number, i: number): number {
  return (randomBits(seed, i) >>> 8) * 5.9604644775390625e-8 // 2^-24
}

/** Fill `out` with the draw of a key: the reference definition of `random_uniform`. */
export function fillUniform(k0: number, k1: number, out: Float32Array): Float32Array {
  const seed = keySeed(k0, k1)
  for (let i = 0; i < out.length; i++) out[i] = uniformAt(seed, i)
  return out
}

/** A key from a seed. */
export function keyFromSeed(seed: number): Key {
  return [fmix32(seed >>> 0) | 0, fmix32((seed ^ 0x5bd1e995) >>> 0) | 0]
}

/** n independent keys derived from one (like jax.random.split). */
export function splitKey(key: Key, n = 2): Key[] {
  const seed = keySeed(key[0], key[1])
  return Array.from({ length: n }, (_, i) => [randomBits(seed, 2 * i + 0x40000000) | 0, randomBits(seed, 2 * i + 1 + 0x40000000) | 0] as const)
}

/** Standard normal draws (Box-Muller) from a key, on the host: for parameter init. */
export function normalHost(key: Key, n: number): Float32Array {
  const seed = keySeed(key[0], key[1])
  const out = new Float32Array(n)
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - uniformAt(seed, i) // (0, 1]
    const u2 = uniformAt(seed, i + 1)
    const r = Math.sqrt(-2 * Math.log(u1))
    out[i] = r * Math.cos(2 * Math.PI * u2)
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * u2)
  }
  return out
}

export function uniformHost(key: Key, n: number): Float32Array {
  return fillUniform(key[0], key[1], new Float32Array(n))
}
