/**
 * Nested arrays and plain objects of leaves ("pytrees"): how parameter sets, states and
 * quantizer results travel in and out of traced functions.
 */
import { TesseraError } from './error.js'

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

/** Flatten a tree into its leaves (depth first, object keys in insertion order). */
export function flatten<L>(tree: unknown, isLeaf: (x: unknown) => x is L, where = 'tree'): { leaves: L[]; def: TreeDef } {
  const leaves: L[] = []
  const go = (t: unknown, path: string): TreeDef => {
    if (isLeaf(t)) {
      leaves.push(t)
      return { kind: 'leaf' }
    }
    if (t === undefined || t === null) return { kind: 'none' }
    if (Array.isArray(t)) return { kind: 'array', items: t.map((x, i) => go(x, `${path}[${i}]`)) }
    const proto = typeof t === 'object' ? Object.getPrototypeOf(t) : undefined
    if (proto === Object.prototype || proto === null) {
      const keys = Object.keys(t)
      return { kind: 'object', keys, items: keys.map((k) => go((t as Record<string, unknown>)[k], `${path}.${k}`)) }
    }
    throw new TesseraError('input', where, `${path} is ${typeof t === 'object' ? 'an object of an unsupported class' : `a ${typeof t}`}, not a leaf, array or plain object`)
  }
  const def = go(tree, where)
  return { leaves, def }
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
