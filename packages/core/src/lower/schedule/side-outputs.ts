import type { Var } from '../../program.js'
import type { ProgramGraph } from './graph.js'
import { isRemap } from './graph.js'
import { ownLoop } from './storage.js'

/**
 * Multi-output fusion: a stored elementwise value with the same shape as a later sum/max/min's
 * operand is computed inside that reduction's loop instead of by a loop of its own (FSQ's codes
 * and its index sum, LFQ's signs and its bit sum: one pass over the input instead of two).
 * Only when the reduced axes are trailing (so the loop walks the operand in row-major order),
 * and only when nothing reads the value before the reduction runs. Argmin/argmax are excluded:
 * their loop stops at the first NaN. Side outputs are added to `absorbed`.
 */
export function sideOutputsOf(
  g: ProgramGraph,
  stored: ReadonlySet<number>,
  absorbed: Set<number>,
  ownStep: ReadonlySet<number>,
): Map<number, Var[]> {
  const { program } = g
  const result = new Map<number, Var[]>()
  // the first stored equation (program order) that reads a value, directly or through inlined
  // values: equations are in dependency order, so a loop before `k` reads it iff this is below k
  const reachMemo = new Map<number, number>()
  const firstStoredReader = (v: Var): number => {
    const hit = reachMemo.get(v.id)
    if (hit !== undefined) return hit
    let first = Infinity
    for (const q of g.uses(v)) first = Math.min(first, stored.has(q.out.id) ? g.orderOf(q.out) : firstStoredReader(q.out))
    reachMemo.set(v.id, first)
    return first
  }
  // candidates by operand shape, in program order
  const byShape = new Map<string, Var[]>()
  for (const d of program.eqns) {
    if (!stored.has(d.out.id) || g.isInput(d.out) || ownLoop(d.prim) || ownStep.has(d.out.id)) continue
    const key = d.out.aval.shape.join(',')
    const list = byShape.get(key)
    if (list) list.push(d.out)
    else byShape.set(key, [d.out])
  }
  program.eqns.forEach((e, k) => {
    if (e.prim !== 'reduce_sum' && e.prim !== 'reduce_max' && e.prim !== 'reduce_min') return
    // a dead reduction gets no step, so values it took as side outputs would never be computed
    if (!stored.has(e.out.id) || absorbed.has(e.out.id) || !g.isLive(e.out)) return
    const shape = e.inputs[0]!.aval.shape
    const r = shape.length
    const axes = [...e.params.axes].sort((a, b) => a - b)
    if (axes.length === 0 || axes.some((a, i) => a !== r - axes.length + i)) return
    const sides: Var[] = []
    for (const v of byShape.get(shape.join(',')) ?? []) {
      if (g.orderOf(v) >= k) break
      // a loop that runs before the reduction and reads this value would see an unwritten buffer
      if (absorbed.has(v.id) || firstStoredReader(v) < k) continue
      sides.push(v)
    }
    // The loop computes a side value at its own flat index; read through a movement op
    // (transpose, slice, broadcast, reshape) it is wanted at another index, which the loop
    // would take from its buffer, unwritten at that point (found by the cross-backend gradient
    // tests: min over transpose(exp(tanh x)) read 0). Such values keep a loop of their own.
    const candidates = new Set(sides.map((v) => v.id))
    const movedReads = new Set<number>()
    const walked = new Set<string>()
    const walk = (v: Var, moved: boolean): void => {
      const key = `${v.id}:${moved}`
      if (walked.has(key)) return
      walked.add(key)
      if (stored.has(v.id) && (moved || !candidates.has(v.id))) {
        if (moved) movedReads.add(v.id)
        return
      }
      const d = g.def(v)
      if (!d) return
      const m = moved || isRemap(d.prim)
      for (const u of d.inputs) walk(u, m)
    }
    walk(e.inputs[0]!, false)
    for (const v of sides) walk(v, false)
    const kept = sides.filter((v) => !movedReads.has(v.id))
    if (kept.length === 0) return
    for (const v of kept) absorbed.add(v.id)
    result.set(e.out.id, kept)
  })
  return result
}
