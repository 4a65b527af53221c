import type { Eqn, Var } from '@tessera/core'
import type { Step } from './plan.js'

/** Prims whose result is a view of their operand: a reader of the result may read the operand's buffer instead (a GEMM or a search through a transpose). */
const VIEWS: ReadonlySet<string> = new Set(['reshape', 'transpose', 'broadcast', 'stop_gradient', 'squeeze', 'expand_dims'])

/** The slots a step writes; undefined for a row chain (its writes are not listed here). */
export function stepWrites(st: Step): readonly number[] | undefined {
  switch (st.kind) {
    case 'kernel': return [st.out, ...(st.sideOuts ?? [])]
    case 'elem': return st.outs
    case 'rows': return undefined
    default: return [st.out]
  }
}

export interface ScratchGraph {
  def(v: Var): Eqn | undefined
  isInput(v: Var): boolean
  /** v's slot, where it has one. */
  slotOf(v: Var): number | undefined
}

/**
 * The slots each step reads: the stored values its outputs are computed from, walking back from
 * them through values it recomputes (not written by a step), and through views, whose operand it
 * may read in their place; the walk may list more reads than the step makes, never fewer. A row
 * chain counts as reading every value written before it (its reads are not listed here).
 */
export function stepReads(steps: readonly Step[], slotVars: readonly Var[], g: ScratchGraph): Set<number>[] {
  const vars = (slots: readonly number[]) => slots.map((s) => slotVars[s]!)
  const writes = steps.map(stepWrites)
  const writtenKnown = new Set(writes.flatMap((w) => w ?? []))
  const readsOf = (outs: readonly Var[], extra: readonly number[]): Set<number> => {
    const reads = new Set<number>(extra)
    const seen = new Set<number>()
    const stack = outs.flatMap((v) => g.def(v)?.inputs ?? [])
    while (stack.length > 0) {
      const u = stack.pop()!
      if (seen.has(u.id)) continue
      seen.add(u.id)
      const d = g.def(u)
      const s = g.slotOf(u)
      if (s !== undefined) reads.add(s)
      // the walk stops at values some step writes (or inputs); a value stored but written by
      // no step here (a row chain's, or one a fold computes from its sources) is walked past
      if (s !== undefined && (g.isInput(u) || writtenKnown.has(s)) && (!d || !VIEWS.has(d.prim))) continue
      if (d) stack.push(...d.inputs)
    }
    return reads
  }
  const written: number[] = []
  return steps.map((st, i) => {
    const w = writes[i]
    let r: Set<number>
    if (!w) r = new Set(written)
    else {
      const extra = st.kind === 'matmul' ? [st.a, st.b] : st.kind === 'reference' ? st.ins : st.kind === 'map' ? [st.in, ...st.rows] : []
      r = readsOf(vars(w), extra)
    }
    written.push(...(w ?? []))
    return r
  })
}

/**
 * Intermediate buffers shared between values whose lifetimes do not overlap, as a memory planner
 * does: a residual quantizer with eight layers stores a residual and a gathered code per layer,
 * eight times the batch each, where two of each are alive at once. Returns, per slot, the index
 * of the buffer it uses (slots of one dtype and size take turns on a buffer), or -1 for a slot
 * that keeps a buffer of its own: inputs and outputs, and values written inside a row chain.
 *
 * A step's reads are stepReads'. A buffer is handed on only after the step that last reads it,
 * so no step ever writes a buffer one of its own operands is in.
 */
export function shareScratch(steps: readonly Step[], slotVars: readonly Var[], fixed: ReadonlySet<number>, g: ScratchGraph): number[] {
  const writes = steps.map(stepWrites)
  const reads = stepReads(steps, slotVars, g)
  const lastRead = new Map<number, number>()
  reads.forEach((r, i) => r.forEach((s) => lastRead.set(s, i)))
  const bufferOf = new Array<number>(slotVars.length).fill(-1)
  const free = new Map<string, number[]>()
  let buffers = 0
  const keyOf = (s: number) => `${slotVars[s]!.aval.dtype}:${slotVars[s]!.aval.shape.reduce((a, b) => a * b, 1)}`
  const release = (s: number) => {
    if (bufferOf[s]! < 0) return
    const k = keyOf(s)
    const list = free.get(k) ?? []
    list.push(bufferOf[s]!)
    free.set(k, list)
  }
  steps.forEach((_, i) => {
    const w = writes[i] ?? []
    for (const s of w) if (!fixed.has(s)) bufferOf[s] = free.get(keyOf(s))?.pop() ?? buffers++
    // after the step: buffers last read here, and those it wrote that nothing reads
    for (const s of reads[i]!) if (lastRead.get(s) === i && !w.includes(s)) release(s)
    for (const s of w) if (!lastRead.has(s) || lastRead.get(s)! <= i) release(s)
  })
  return bufferOf
}
