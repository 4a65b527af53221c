/**
 * Nested arrays and plain objects of leaves ("pytrees"): how parameter sets, states and
 * quantizer results travel in and out of traced functions.
 */
import { TesseraError } from './error.js'
import { describeValue } from './host-tensor.js'

export type Tree<L> = L | readonly Tree<L>[] | { readonly [k: string]: Tree<L> }

/** Replace every leaf of type From in T by To, keeping the structure. */
export type MapLeaves<T, From, To> = T extends From
  ? To
  : T extends readonly unknown[]
    ? { -readonly [K in keyof T]: MapLeaves<T[K], From, To> }
    : T extends object
      ? { -readonly [K in keyof T]: MapLeaves<T[K], From, To> }
      : T

export type TreeDef =
  | { readonly kind: 'leaf' }
  | { readonly kind: 'array'; readonly items: readonly TreeDef[] }
  | { readonly kind: 'object'; readonly keys: readonly string[]; readonly items: readonly TreeDef[] }
  | { readonly kind: 'none' }

/** `path` then key `k`: `.k` where k is an identifier, else `['k']` (dotted state names, say). */
const child = (path: string, k: string) => (/^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`)

/**
 * Flatten a tree into its leaves (depth first, object keys in insertion order), with each leaf's
 * path from `where` (`args[2].state["vq.embed"]`).
 */
export function flatten<L>(tree: unknown, isLeaf: (x: unknown) => x is L, where = 'tree'): { leaves: L[]; def: TreeDef; paths: string[] } {
  const leaves: L[] = []
  const paths: string[] = []
  const go = (t: unknown, path: string): TreeDef => {
    if (isLeaf(t)) {
      leaves.push(t)
      paths.push(path)
      return { kind: 'leaf' }
    }
    if (t === undefined || t === null) return { kind: 'none' }
    if (Array.isArray(t)) return { kind: 'array', items: t.map((x, i) => go(x, `${path}[${i}]`)) }
    const proto = typeof t === 'object' ? Object.getPrototypeOf(t) : undefined
    if (proto === Object.prototype || proto === null) {
      const keys = Object.keys(t)
      return { kind: 'object', keys, items: keys.map((k) => go((t as Record<string, unknown>)[k], child(path, k))) }
    }
    throw new TesseraError('input', where, `${path} is ${typeof t === 'object' ? 'an object of an unsupported class' : `a ${typeof t}`}, not a leaf, array or plain object`)
  }
  const def = go(tree, where)
  return { leaves, def, paths }
}

/**
 * The entries of `tree` at the positions of `def`'s leaves, in flatten's order, with their paths
 * from `root`: for trees given in the shape of another's (arrays to write a program's outputs
 * into). A subtree left out (undefined or null) gives undefined entries; leaves are not checked
 * here. A key or item `def` has not, or an array or object where `def` has a leaf or nothing (or
 * the reverse), throws an error naming its path.
 */
export function flattenAs(def: TreeDef, tree: unknown, where = 'tree', root = where): { leaves: unknown[]; paths: string[] } {
  const leaves: unknown[] = []
  const paths: string[] = []
  const absent = (t: unknown) => t === undefined || t === null
  const fail = (path: string, msg: string): never => {
    throw new TesseraError('input', where, `${path} ${msg}`)
  }
  const go = (d: TreeDef, t: unknown, path: string): void => {
    switch (d.kind) {
      case 'leaf':
        leaves.push(absent(t) ? undefined : t)
        paths.push(path)
        return
      case 'none':
        if (!absent(t)) fail(path, 'has no counterpart: that entry is absent here')
        return
      case 'array':
        if (!absent(t) && !Array.isArray(t)) fail(path, `must be an array of ${d.items.length} entries, got ${describeValue(t)}`)
        if (Array.isArray(t) && t.length > d.items.length) fail(path, `has ${t.length} entries; ${d.items.length} expected`)
        d.items.forEach((item, i) => go(item, (t as unknown[] | undefined)?.[i], `${path}[${i}]`))
        return
      case 'object': {
        const proto = typeof t === 'object' && t !== null ? Object.getPrototypeOf(t) : undefined
        if (!absent(t) && (Array.isArray(t) || (proto !== Object.prototype && proto !== null)))
          fail(path, `must be a plain object with entries ${d.keys.map((k) => JSON.stringify(k)).join(', ')}, got ${describeValue(t)}`)
        const extra = absent(t) ? undefined : Object.keys(t as object).find((k) => !d.keys.includes(k))
        if (extra !== undefined) fail(child(path, extra), `has no counterpart (entries here: ${d.keys.map((k) => JSON.stringify(k)).join(', ')})`)
        d.keys.forEach((k, j) => go(d.items[j]!, absent(t) ? undefined : (t as Record<string, unknown>)[k], child(path, k)))
        return
      }
    }
  }
  go(def, tree, root)
  return { leaves, paths }
}

/** Rebuild a tree of the given structure from leaves in flatten's order. */
export function unflatten<L>(def: TreeDef, leaves: readonly L[]): unknown {
  let i = 0
  const go = (d: TreeDef): unknown => {
    switch (d.kind) {
      case 'leaf':
        return leaves[i++]
      case 'none':
        return undefined
      case 'array':
        return d.items.map(go)
      case 'object': {
        const o: Record<string, unknown> = {}
        d.keys.forEach((k, j) => {
          o[k] = go(d.items[j]!)
        })
        return o
      }
    }
  }
  const out = go(def)
  if (i !== leaves.length) throw new TesseraError('input', 'unflatten', `structure has ${i} leaves, got ${leaves.length}`)
  return out
}
