import type { Eqn, LoopSchedule, LoopStep, ScheduleStep, Var } from '@tessera/core'
import { swapsLastTwo } from './gemm-rewrite.js'
import type { GemmLayout, GemmRunner } from './wasm/gemm.js'
import { gemmLayout, gemmSet } from './wasm/gemm.js'
import type { ProgramCalls, WorkerPool } from './wasm/threads.js'

/** A matmul the GEMM kernel runs: the buffers it reads (maybe a transpose's source) and its kernel. */
export interface GemmPick {
  readonly a: Var
  readonly b: Var
  readonly runner: GemmRunner
}

export interface GemmPlan {
  /** The GEMM for a top-level matmul step's equation, if it takes one. */
  of(eqn: Eqn): GemmPick | undefined
  /** Whether a step only materialized a transpose that every reader now reads through. */
  dropped(st: ScheduleStep): boolean
  /** Ends the worker thread of split products; resolves once it has exited. */
  dispose(): Promise<void>
}

/** Inner dimensions up to which matmuls keep the float64 JS loops (LFQ's logits; small-k kernel). */
const SMALL_K = 16

/** Multiply-adds from which a product is split over two threads (see bench/README.md, the split GEMMs). */
const THREAD_MIN_MACS = 1 << 21

/**
 * Picks the matmuls of a schedule that run as the WebAssembly GEMM: top-level steps with
 * k > 16 and at least `minMacs` multiply-adds (Infinity: none). An operand that is a matrix
 * transpose of a whole stored value is read through (the GEMM takes either layout), and a
 * transpose's loop is dropped when GEMMs are its only readers and it is not an output.
 * `threads` > 1 splits large products over a worker; `relaxed` uses relaxed SIMD's multiply-add.
 */
/** The plan that takes no matmul (GEMMs off, or a schedule without a matmul step). */
export const NO_GEMMS: GemmPlan = { of: () => undefined, dropped: () => false, dispose: () => Promise.resolve() }

export function planGemms(schedule: LoopSchedule, minMacs: number, threads = 1, relaxed = false, threadMinMacs = THREAD_MIN_MACS, pool?: WorkerPool, calls?: ProgramCalls): GemmPlan {
  const { graph, stored } = schedule
  const picks = new Map<Eqn, { a: Var; b: Var; layout: GemmLayout }>()
  if (!Number.isFinite(minMacs)) return NO_GEMMS
  // values a row chain holds one block at a time have no whole buffer to read through to
  const local = new Set<number>()
  for (const st of schedule.steps) if (st.kind === 'rows') for (const v of st.local) local.add(v.id)
  const readThrough = new Map<number, number>()

  /**
   * The buffer behind `v` and whether it holds v transposed: one matrix transpose is looked through
   * (foldGemmTransposes has already merged transposes of transposes).
   */
  const resolve = (v: Var): { v: Var; trans: boolean; through: Var[] } => {
    const d = graph.def(v)
    if (!d || d.prim !== 'transpose' || !swapsLastTwo(d.params.perm)) return { v, trans: false, through: [] }
    const src = d.inputs[0]!
    if (!stored.has(src.id) || local.has(src.id)) return { v, trans: false, through: [] }
    return { v: src, trans: true, through: [v] }
  }

  for (const st of schedule.steps) {
    if (st.kind !== 'matmul') continue
    const [a, b] = st.eqn.inputs as [Var, Var]
    const r = a.aval.shape.length
    const m = a.aval.shape[r - 2]!, k = a.aval.shape[r - 1]!, n = b.aval.shape[r - 1]!
    if (k <= SMALL_K || m * k * n < minMacs) continue
    const ra = resolve(a), rb = resolve(b)
    for (const t of [...ra.through, ...rb.through]) readThrough.set(t.id, (readThrough.get(t.id) ?? 0) + 1)
    picks.set(st.eqn, { a: ra.v, b: rb.v, layout: gemmLayout({ m, k, n, transA: ra.trans, transB: rb.trans }) })
  }
  const { runners, dispose } = gemmSet([...picks.values()].map((p) => p.layout), { threads, threadMinMacs, relaxed, ...(pool ? { pool } : {}), ...(calls ? { calls } : {}) })
  const chosen = new Map<Eqn, GemmPick>()
  ;[...picks].forEach(([e, p], i) => chosen.set(e, { a: p.a, b: p.b, runner: runners[i]! }))
  const droppable = (v: Var) => !graph.isOutput(v) && readThrough.get(v.id) === graph.uses(v).length
  return {
    of: (eqn) => chosen.get(eqn),
    dropped: (st) => st.kind === 'loop' && droppable((st as Extract<LoopStep, { kind: 'loop' }>).out),
    dispose,
  }
}
