import type { ElemGroup, GatheredRead } from './wasm/elementwise.js'
import { groupReads } from './wasm/elementwise.js'

/**
 * Gathers of whole rows that need not be stored: every step reading the gathered array is an
 * elementwise pass that reads it whole, so each of those passes gathers the rows into its own
 * memory instead (elementwise.ts's GatheredRead) and the gather step is dropped. A residual
 * quantizer's per-layer codes are read by the residual's update and by the running sum; gathered
 * in the passes, they are neither written out nor read back, nor held until the sum.
 *
 * `items` are the plan's steps in run order, elementwise groups among them; `readsOf(i)` the
 * slots item i reads (a superset will do; only asked of items that are not groups); `gatherAt`
 * maps a candidate gather's output slot to how it gathers; `keep` lists slots that must be stored
 * (the program's outputs); `fits` says whether a group can gather these operands itself.
 * Returns the gathers to drop, by output slot, with how the groups read them.
 */
export function fusedGathers<S>(
  items: readonly (S | ElemGroup)[],
  isGroup: (x: S | ElemGroup) => x is ElemGroup,
  readsOf: (i: number) => ReadonlySet<number>,
  gatherAt: ReadonlyMap<number, GatheredRead>,
  keep: ReadonlySet<number>,
  fits: (g: ElemGroup, gathered: ReadonlyMap<number, GatheredRead>) => boolean,
): Map<number, GatheredRead> {
  const fused = new Map([...gatherAt].filter(([s]) => !keep.has(s)))
  if (fused.size === 0) return fused
  const readsByGroup = new Map<number, ReturnType<typeof groupReads>>()
  items.forEach((x, i) => {
    if (isGroup(x)) readsByGroup.set(i, groupReads(x))
  })
  // a gathered array read by anything but a group's whole operands stays stored
  items.forEach((_, i) => {
    const r = readsByGroup.get(i)
    if (r) for (const s of [...r.rows, ...r.single, ...r.perRow.map((p) => p.slot)]) fused.delete(s)
    else for (const s of readsOf(i)) fused.delete(s)
  })
  // a group that cannot gather its operands reads them stored (and keeps them so for every reader)
  for (let changed = true; changed; ) {
    changed = false
    items.forEach((x, i) => {
      const r = readsByGroup.get(i)
      if (!r || !isGroup(x)) return
      const mine = new Map(r.whole.filter((s) => fused.has(s)).map((s) => [s, fused.get(s)!]))
      if (mine.size > 0 && !fits(x, mine)) {
        for (const s of mine.keys()) fused.delete(s)
        changed = true
      }
    })
  }
  return fused
}
