/**
 * Parameter trees are flat records keyed by dotted names (`encoder.0.weight`), as the
 * quantizers' state dicts are: a model nests its parts by prefixing their names, and saving,
 * loading or an optimizer step is a walk over keys.
 */
export type Named<T> = Readonly<Record<string, T>>

/** Prefix every key: `{weight} -> {'enc.0.weight'}`. */
export function prefixed<T>(prefix: string, record: Named<T>): Record<string, T> {
  const out: Record<string, T> = {}
  for (const [k, v] of Object.entries(record)) out[`${prefix}.${k}`] = v
  return out
}

/** The entries under `prefix.`, with the prefix removed. */
export function scope<T>(record: Named<T>, prefix: string): Record<string, T> {
  const out: Record<string, T> = {}
  const p = `${prefix}.`
  for (const [k, v] of Object.entries(record)) if (k.startsWith(p)) out[k.slice(p.length)] = v
  return out
}

/** Apply `f` to every entry, keeping the keys. */
export function mapNamed<A, B>(record: Named<A>, f: (v: A, key: string) => B): Record<string, B> {
  const out: Record<string, B> = {}
  for (const [k, v] of Object.entries(record)) out[k] = f(v, k)
  return out
}
