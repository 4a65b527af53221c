import { allocate, fmtAval, shapeEq } from '../dtype.js'
import type { AnyTypedArray } from '../dtype.js'
import { TesseraError } from '../error.js'
import type { HostTensor } from '../host-tensor.js'
import { describeValue } from '../host-tensor.js'
import type { AllReduceOp } from '../prim.js'

/**
 * What `runCollective` needs from a transport: this process's rank, the number of ranks, and an
 * all-reduce over host tensors. Any transport (worker threads, WebSockets, MPI, ...) implements it;
 * docs/DISTRIBUTED.md states the contract.
 */
export interface Collective {
  /** This rank, 0 <= rank < size. */
  readonly rank: number
  /** The number of ranks taking part; every rank's program reads the same size. */
  readonly size: number
  /**
   * One round: every rank calls this with the same number of tensors, of the same shapes and
   * dtypes, in the same order, with the same op, and each gets back, per tensor, the element-wise
   * combination over the ranks (`combineRanks`): identical arrays on every rank.
   */
  allReduce(tensors: readonly HostTensor[], op: AllReduceOp): Promise<HostTensor[]>
}

/**
 * The reduction every transport must compute, so results are the same whatever carries them:
 * float32 terms are added in float64 in rank order and rounded once to float32 (for 'mean' the
 * float64 sum is divided by the number of ranks before that rounding), as the reference
 * evaluator's reduce_sum does; int32 terms wrap around (the order cannot change the result).
 * `parts[r]` is rank r's tensor.
 */
export function combineRanks(parts: readonly HostTensor[], op: AllReduceOp, where = 'all_reduce'): HostTensor {
  const first = parts[0]
  if (!first) throw new TesseraError('input', where, 'no rank contributed a value')
  parts.forEach((p, r) => {
    if (p.dtype !== first.dtype || !shapeEq(p.shape, first.shape))
      throw new TesseraError('runtime', where, `rank ${r} contributed ${fmtAval(p)} where rank 0 contributed ${fmtAval(first)}: every rank must reduce the same shapes in the same order`)
  })
  const n = first.data.length
  const out = allocate(first.dtype, n) as AnyTypedArray
  if (first.dtype === 'float32') {
    for (let i = 0; i < n; i++) {
      let s = 0
      for (const p of parts) s += p.data[i]!
      out[i] = op === 'mean' ? s / parts.length : s
    }
  } else if (first.dtype === 'int32') {
    if (op === 'mean') throw new TesseraError('dtype', where, 'mean is defined for float32 only')
    for (let i = 0; i < n; i++) {
      let s = 0
      for (const p of parts) s = (s + p.data[i]!) | 0
      out[i] = s
    }
  } else throw new TesseraError('dtype', where, `cannot reduce ${fmtAval(first)}; expected float32 or int32`)
  return { shape: [...first.shape], dtype: first.dtype, data: out } as HostTensor
}

/** Checks that `comm` looks like a Collective; a Left-style error naming the field otherwise. */
export function checkCollective(comm: unknown, where: string): TesseraError | undefined {
  const c = comm as Partial<Collective> | null
  if (typeof c !== 'object' || c === null || typeof c.allReduce !== 'function')
    return new TesseraError('input', where, `collective must be a Collective { rank, size, allReduce }, got ${describeValue(comm)}`)
  if (!Number.isInteger(c.size) || c.size! < 1) return new TesseraError('input', where, `collective.size must be a positive integer, got ${describeValue(c.size)}`)
  if (!Number.isInteger(c.rank) || c.rank! < 0 || c.rank! >= c.size!)
    return new TesseraError('input', where, `collective.rank must be an integer in [0, ${c.size}), got ${describeValue(c.rank)}`)
  return undefined
}

interface Round {
  op: AllReduceOp
  parts: (readonly HostTensor[] | undefined)[]
  arrived: number
  waiters: { resolve: (v: HostTensor[]) => void; reject: (e: unknown) => void }[]
}

/**
 * `size` ranks in one thread (concurrent async calls, one per rank): for tests, for browsers, and
 * for simulating a cluster. Round k of rank r meets round k of every other rank; the reduction is
 * `combineRanks`, so results equal those of any other transport.
 */
export function localCollectives(size: number): Collective[] {
  if (!Number.isInteger(size) || size < 1) throw new TesseraError('input', 'localCollectives', `size must be a positive integer, got ${describeValue(size)}`)
  const rounds = new Map<number, Round>()
  const next = new Array<number>(size).fill(0)
  const make = (rank: number): Collective => ({
    rank,
    size,
    allReduce(tensors, op) {
      const k = next[rank]!++
      let round = rounds.get(k)
      if (!round) {
        round = { op, parts: new Array(size).fill(undefined), arrived: 0, waiters: [] }
        rounds.set(k, round)
      }
      const r = round
      return new Promise<HostTensor[]>((resolve, reject) => {
        r.parts[rank] = tensors.map((t) => ({ shape: [...t.shape], dtype: t.dtype, data: t.data.slice() }) as HostTensor)
        r.arrived++
        r.waiters.push({ resolve, reject })
        if (r.op !== op) {
          const e = new TesseraError('runtime', 'all_reduce', `round ${k}: rank ${rank} asked for ${op}, another rank for ${r.op}`)
          for (const w of r.waiters) w.reject(e)
          return
        }
        if (r.arrived < size) return
        rounds.delete(k)
        try {
          const count = r.parts[0]!.length
          r.parts.forEach((p, q) => {
            if (p!.length !== count) throw new TesseraError('runtime', 'all_reduce', `round ${k}: rank ${q} reduced ${p!.length} tensor(s), rank 0 ${count}`)
          })
          const out = Array.from({ length: count }, (_, i) => combineRanks(r.parts.map((p) => p![i]!), op))
          // each rank gets its own arrays, as a transport that copies would give
          for (const w of r.waiters) w.resolve(out.map((t) => ({ ...t, data: t.data.slice() }) as HostTensor))
        } catch (e) {
          for (const w of r.waiters) w.reject(e)
        }
      })
    },
  })
  return Array.from({ length: size }, (_, r) => make(r))
}

/** The one-rank Collective: every all-reduce is the identity (a copy). */
export const soloCollective = (): Collective => localCollectives(1)[0]!
