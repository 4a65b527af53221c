import type { Var } from '../../program.js'
import { readsOf, isHeavy } from './fused.js'
import type { ProgramGraph } from './graph.js'
import { isElementwise, sizeOfVar } from './graph.js'
import type { ChainStep, LoopStep, RowChain, ScheduleStep } from './steps.js'
import { writesOf } from './steps.js'

/** How row chains are formed: sizes in elements, and threads (counting the calling thread). */
export interface RowOptions {
  /** Intermediates at least this large make a chain worth forming. */
  readonly chainMinElems: number
  /** Elements of the widest row value per block. */
  readonly blockElems: number
  /** Elements (rows x widest row) from which a heavy chain is shared with worker threads. */
  readonly threadMinElems: number
  readonly threads: number
  /** Rows per block, forcing chains of any size (tests). */
  readonly forcedRows?: number
}

/**
 * How a step reads memory when run on a block of rows of a leading axis of size n: the values it
 * reads row by row (row i of the step from row i of the value), the values it reads whole, and
 * the values it writes (row-indexed). Undefined when the step's value at row i depends on other
 * rows (or on the row number itself, as iota along axis 0 does).
 */
interface Access {
  readonly rowReads: Set<number>
  readonly wholeReads: Set<number>
  readonly writes: readonly number[]
  readonly sink: boolean
}

interface Cx {
  readonly g: ProgramGraph
  readonly stored: ReadonlySet<number>
}

function accessOf(st: LoopStep, n: number, cx: Cx): Access | undefined {
  const rowReads = new Set<number>(), wholeReads = new Set<number>()
  const isRow = (v: Var) => v.aval.shape.length >= 1 && v.aval.shape[0] === n
  // walks the fused expression of `v`; `selves` are computed by the step itself (never leaves).
  // Shared subexpressions are walked once (selves are fixed for one step).
  const seen = new Map<string, boolean>()
  const walk = (v: Var, row: boolean, selves: ReadonlySet<number>): boolean => {
    const key = `${v.id}:${row}`
    const hit = seen.get(key)
    if (hit !== undefined) return hit
    const r = walkOnce(v, row, selves)
    seen.set(key, r)
    return r
  }
  const walkOnce = (v: Var, row: boolean, selves: ReadonlySet<number>): boolean => {
    if (cx.stored.has(v.id) && !selves.has(v.id)) {
      ;(row ? rowReads : wholeReads).add(v.id)
      return true
    }
    const e = cx.g.def(v)
    if (!e) return false
    if (!row) return e.inputs.every((u) => walk(u, false, selves))
    if (!isRow(v)) return false
    switch (e.prim) {
      case 'iota': return e.params.axis !== 0
      case 'full': return true
      case 'broadcast': {
        const u = e.inputs[0]!
        if (u.aval.shape.length === v.aval.shape.length && u.aval.shape[0] === n) return walk(u, true, selves)
        if (u.aval.shape.length < v.aval.shape.length || u.aval.shape[0] === 1) return walk(u, false, selves)
        return false
      }
      case 'reshape': return isRow(e.inputs[0]!) && walk(e.inputs[0]!, true, selves)
      case 'transpose': return e.params.perm[0] === 0 && walk(e.inputs[0]!, true, selves)
      case 'slice': return e.params.start[0] === 0 && e.params.step[0] === 1 && isRow(e.inputs[0]!) && walk(e.inputs[0]!, true, selves)
      default:
        if (!isElementwise(e.prim)) return false
        return e.inputs.every((u) => u.aval.shape.length === v.aval.shape.length && isRow(u) && walk(u, true, selves))
    }
  }
  switch (st.kind) {
    case 'reduce': {
      const e = st.eqn
      const src = e.inputs[0]!
      if (!isRow(src)) return undefined
      const axes = e.prim === 'argmin' || e.prim === 'argmax' ? [e.params.axis] : (e.params as { axes: readonly number[] }).axes
      const selves = new Set(st.sides.map((v) => v.id))
      if (axes.includes(0)) {
        const sorted = [...axes].sort((a, b) => a - b)
        if (e.prim !== 'reduce_sum' || st.sides.length > 0 || !sorted.every((a, i) => a === i)) return undefined
        return walk(src, true, selves) ? { rowReads, wholeReads, writes: [], sink: true } : undefined
      }
      if (!walk(src, true, selves) || !st.sides.every((v) => walk(v, true, selves))) return undefined
      return { rowReads, wholeReads, writes: [e.out.id, ...st.sides.map((v) => v.id)], sink: false }
    }
    case 'loop': {
      const out = st.out
      if (!isRow(out) || !walk(out, true, new Set([out.id]))) return undefined
      return { rowReads, wholeReads, writes: [out.id], sink: false }
    }
    case 'matmul': {
      const [a, b] = st.eqn.inputs
      if (a.aval.shape.length !== 2 || a.aval.shape[0] !== n) return undefined
      rowReads.add(a.id)
      wholeReads.add(b.id)
      return { rowReads, wholeReads, writes: [st.eqn.out.id], sink: false }
    }
    case 'expMap': {
      const { base, rows } = st.pattern
      if (!isRow(base) || st.out.aval.shape.length < 2 || !rows.every((v) => v.aval.shape[0] === n)) return undefined
      rowReads.add(base.id)
      rows.forEach((v) => rowReads.add(v.id))
      return { rowReads, wholeReads, writes: [st.out.id], sink: false }
    }
    default:
      return undefined
  }
}

const sinkOut = (st: LoopStep): number => (st.kind === 'reduce' ? st.eqn.out.id : -1)

/**
 * Finds one chain of steps over a leading axis (that of the largest value a loop writes) and
 * replaces them by a row chain. Steps that cannot join run after the chain, in their order; a
 * step joins only if it reads nothing such a deferred step writes, nothing a sink of the chain
 * has not finished, and reads no chain-written value whole.
 */
export function formRowChain(steps: readonly LoopStep[], cx: Cx, o: RowOptions): ScheduleStep[] {
  const varOf = new Map<number, Var>()
  for (const v of cx.g.program.inputs) varOf.set(v.id, v)
  for (const e of cx.g.program.eqns) varOf.set(e.out.id, e.out)
  const V = (id: number) => varOf.get(id)!
  const sizeOf = (id: number) => sizeOfVar(V(id))
  let first: number | undefined
  for (const st of steps) {
    if (st.kind !== 'loop' && st.kind !== 'reduce' && st.kind !== 'matmul' && st.kind !== 'expMap') continue
    for (const v of writesOf(st)) {
      if (v.aval.shape.length === 0) continue
      if (first === undefined || sizeOf(v.id) > sizeOf(first)) first = v.id
    }
  }
  const worth = o.threads > 1 ? Math.min(o.chainMinElems, o.threadMinElems) : o.chainMinElems
  if (first === undefined || (o.forcedRows === undefined && sizeOf(first) < worth)) return [...steps]
  const n = V(first).aval.shape[0]!
  const chain: { st: LoopStep; acc: Access }[] = []
  const pre: LoopStep[] = [], rest: LoopStep[] = []
  const written = new Set<number>() // row values written by chain steps
  const sinkOuts = new Set<number>()
  const deferredOuts = new Set<number>()
  const rowRead = new Set<number>(), wholeRead = new Set<number>()
  const reads = (st: LoopStep) => readsOf(st, cx.g, cx.stored)?.map((v) => v.id)
  for (const st of steps) {
    const acc = accessOf(st, n, cx)
    const rd = acc ? [...acc.rowReads, ...acc.wholeReads] : []
    const ok = acc !== undefined &&
      rd.every((s) => !deferredOuts.has(s) && !sinkOuts.has(s)) &&
      [...acc.wholeReads].every((s) => !written.has(s) && !rowRead.has(s)) &&
      [...acc.rowReads].every((s) => !wholeRead.has(s))
    if (!ok) {
      // a step that reads nothing the chain (or a step deferred after it) writes runs before it
      const r = reads(st)
      const independent = r !== undefined && r.every((s) => !written.has(s) && !sinkOuts.has(s) && !deferredOuts.has(s))
      if (chain.length === 0 || independent) pre.push(st)
      else {
        rest.push(st)
        writesOf(st).forEach((v) => deferredOuts.add(v.id))
      }
      continue
    }
    chain.push({ st, acc })
    acc.writes.forEach((s) => written.add(s))
    acc.rowReads.forEach((s) => rowRead.add(s))
    acc.wholeReads.forEach((s) => wholeRead.add(s))
    if (acc.sink) sinkOuts.add(sinkOut(st))
  }
  // values read by a deferred step, and program outputs, must be whole
  const readLater = new Set<number>()
  for (const st of rest) {
    const r = reads(st)
    if (r === undefined) written.forEach((s) => readLater.add(s))
    else r.forEach((s) => readLater.add(s))
  }
  const local = [...written].filter((s) => !readLater.has(s) && !cx.g.isOutput(V(s)))
  if (chain.length === 0) return [...steps]
  const rowElems = (s: number) => sizeOf(s) / n
  const widest = Math.max(...[...written, ...rowRead].map(rowElems), 1)
  const rows = Math.max(1, Math.min(n, o.forcedRows ?? Math.floor(o.blockElems / widest)))
  const chainSteps: ChainStep[] = chain.map(({ st, acc }) => ({ step: st, sink: acc.sink }))
  const localSet = new Set(local)
  const full = [...written].filter((s) => !localSet.has(s))
  const views = [...new Set([...rowRead, ...written])].filter((s) => !localSet.has(s))
  const blocks = Math.ceil(n / rows)
  // threads pay for themselves on heavy loops (transcendentals, matmuls) over many elements
  const heavy = chain.some(({ st }) => isHeavy(st, cx.g, cx.stored))
  const workers = o.threads > 1 && blocks > 1 && heavy && n * widest >= o.threadMinElems ? o.threads - 1 : 0
  // a chain pays when it keeps a large intermediate out of memory, or when threads share it
  if (o.forcedRows === undefined && local.every((s) => sizeOf(s) < o.chainMinElems) && workers === 0) return [...steps]
  const rowChain: RowChain = {
    kind: 'rows', n, rows, steps: chainSteps,
    local: local.map(V), full: full.map(V), views: views.map(V), wholeReads: [...wholeRead].map(V), workers,
  }
  return [...pre, rowChain, ...rest]
}
