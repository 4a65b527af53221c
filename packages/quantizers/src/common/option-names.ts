import { TesseraError } from '@tessera/core'

/** The options every quantizer's `apply` takes (`ApplyOptions`). */
export const APPLY_OPTION_NAMES: readonly string[] = ['training', 'key', 'world']

/**
 * Refuses, by name, every key of a call's options that is not one of `allowed` (undefined values
 * are ignored): a combinator that hands its options to its layers would otherwise pass a misspelt
 * option, or one the reference's module does not take, to layers that ignore it or act on it untested.
 */
export function checkOptionNames(opts: unknown, allowed: readonly string[], where: string): void {
  if (typeof opts !== 'object' || opts === null) throw new TesseraError('input', `${where}.opts`, `must be an options object { training, ... }, got ${opts === null ? 'null' : typeof opts}`)
  for (const k of Object.keys(opts)) {
    if ((opts as Record<string, unknown>)[k] === undefined || allowed.includes(k)) continue
    const own = allowed.filter((a) => !APPLY_OPTION_NAMES.includes(a))
    throw new TesseraError('input', `${where}.${k}`, `is not a per-call option of ${where}; it takes ${[...APPLY_OPTION_NAMES, ...own].join(', ')}`)
  }
}
