/**
 * Parameter and state trees are flat records keyed by dotted names (`layers.0._codebook.embed`,
 * `encoder.0.weight`), as PyTorch state dicts are: loading a state dict is a lookup, and a model or
 * combinator nests its parts by prefixing their names. A prefix carries its own trailing dot
 * (`layers.0.`), so the empty prefix means "not nested".
 */
export type Named<T> = Readonly<Record<string, T>>

/** Prefix every key: `prefixed({ weight }, 'enc.0.')` is `{ 'enc.0.weight' }`. */
export function prefixed<T>(record: Named<T>, prefix: string): Record<string, T> {
  const out: Record<string, T> = {}
  for (const [k, v] of Object.entries(record)) out[`${prefix}${k}`] = v
  return out
}

/** The entries under `prefix`, with the prefix removed: the inverse of `prefixed`. */
export function scoped<T>(record: Named<T>, prefix: string): Record<string, T> {
  const out: Record<string, T> = {}
  for (const [k, v] of Object.entries(record)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = v
  return out
}

/** Apply `f` to every entry, keeping the keys. */
export function mapNamed<A, B>(record: Named<A>, f: (v: A, key: string) => B): Record<string, B> {
  const out: Record<string, B> = {}
  for (const [k, v] of Object.entries(record)) out[k] = f(v, k)
  return out
}
