import type { Eqn, EqnOf, Program, Var } from '../program.js'
import { makeProgram } from '../program.js'

/**
 * A concat of more pieces than one kernel may read becomes a tree of concats whose inner nodes
 * are buffers of their own (`forced`): the kernel that writes each reads at most `maxArgs`
 * pieces. Values are unchanged (a concat of concats along one axis is the same concat).
 */
export function splitWideConcats(p: Program, maxArgs: number): { readonly program: Program; readonly forced: ReadonlySet<number> } {
  const width = Math.max(2, Math.floor(maxArgs))
  if (!p.eqns.some((e) => e.prim === 'concat' && e.inputs.length > width)) return { program: p, forced: new Set() }
  let nextId = Math.max(0, ...p.inputs.map((v) => v.id), ...p.eqns.map((e) => e.out.id)) + 1
  const forced = new Set<number>()
  const eqns: Eqn[] = []
  for (const e of p.eqns) {
    if (e.prim !== 'concat' || e.inputs.length <= width) {
      eqns.push(e)
      continue
    }
    const axis = (e as EqnOf<'concat'>).params.axis
    let pieces: readonly Var[] = e.inputs
    while (pieces.length > width) {
      const next: Var[] = []
      for (let i = 0; i < pieces.length; i += width) {
        const group = pieces.slice(i, i + width)
        if (group.length === 1) {
          next.push(group[0]!)
          continue
        }
        const shape = group[0]!.aval.shape.map((d, k) => (k === axis ? group.reduce((s, v) => s + v.aval.shape[axis]!, 0) : d))
        const out: Var = { id: nextId++, aval: { shape, dtype: e.out.aval.dtype } }
        eqns.push({ prim: 'concat', params: { axis }, inputs: group, out })
        forced.add(out.id)
        next.push(out)
      }
      pieces = next
    }
    eqns.push({ ...e, inputs: pieces } as Eqn)
  }
  return { program: makeProgram(p.inputs, eqns, p.outputs), forced }
}
