import * as E from 'fp-ts/lib/Either.js'
import type { MessagePort, Worker } from 'node:worker_threads'
import type { Collective } from '../distributed/collective.js'
import { combineRanks } from '../distributed/collective.js'
import type { ErrorKind } from '../error.js'
import { TesseraError } from '../error.js'
import type { HostTensor } from '../host-tensor.js'
import { describeValue } from '../host-tensor.js'
import type { AllReduceOp } from '../prim.js'

/**
 * `@tessera/core/worker-threads`: NODE ONLY. Ranks as worker threads of one process, joined by a
 * mesh of MessagePorts (one channel per pair of ranks). `node:worker_threads` is looked up when
 * first needed (process.getBuiltinModule), never at module top level. The reduction is core's
 * `combineRanks` (float64 sums in rank order), so results are those of any other transport.
 */

type WorkerThreads = typeof import('node:worker_threads')

function workerThreads(where: string): WorkerThreads {
  const p = (globalThis as { process?: { getBuiltinModule?(id: string): unknown } }).process
  const wt = p?.getBuiltinModule?.('node:worker_threads') as WorkerThreads | undefined
  if (!wt) throw new TesseraError('backend', where, '@tessera/core/worker-threads needs Node (>= 20.16) with node:worker_threads')
  return wt
}

/** What one rank's thread is given: its place, and a port to every other rank (null at its own index). */
export interface RankHandle {
  readonly rank: number
  readonly size: number
  readonly ports: readonly (MessagePort | null)[]
}

/** A Collective over a rank's ports; `close()` releases the ports so the thread can exit. */
export interface WorkerCollective extends Collective {
  close(): void
}

/** A mesh for `size` ranks: one handle per rank (pass each to its thread, transferring its ports). */
export function meshHandles(size: number): RankHandle[] {
  if (!Number.isInteger(size) || size < 1) throw new TesseraError('input', 'meshHandles', `size must be a positive integer, got ${describeValue(size)}`)
  const wt = workerThreads('meshHandles')
  const ports: (MessagePort | null)[][] = Array.from({ length: size }, () => new Array(size).fill(null))
  for (let a = 0; a < size; a++)
    for (let b = a + 1; b < size; b++) {
      const ch = new wt.MessageChannel()
      ports[a]![b] = ch.port1
      ports[b]![a] = ch.port2
    }
  return ports.map((p, rank) => ({ rank, size, ports: p }))
}

interface Contribution {
  readonly round: number
  readonly op: AllReduceOp
  readonly tensors: readonly HostTensor[]
}

/**
 * The Collective of one rank over its mesh ports. Round k's message from every other rank is
 * kept until this rank reaches round k (ranks may run ahead of each other by any number of rounds).
 */
export function connectRank(handle: RankHandle): WorkerCollective {
  const { rank, size, ports } = handle
  if (!Number.isInteger(size) || size < 1 || !Number.isInteger(rank) || rank < 0 || rank >= size || !Array.isArray(ports) || ports.length !== size)
    throw new TesseraError('input', 'connectRank', `handle must be a RankHandle from meshHandles, got ${describeValue(handle)}`)
  const inbox = new Map<number, (Contribution | undefined)[]>()
  const waiting = new Map<number, () => void>()
  const slot = (k: number) => {
    let s = inbox.get(k)
    if (!s) inbox.set(k, (s = new Array(size).fill(undefined)))
    return s
  }
  ports.forEach((port, from) => {
    port?.on('message', (m: Contribution) => {
      slot(m.round)[from] = m
      waiting.get(m.round)?.()
    })
  })
  let round = 0
  return {
    rank,
    size,
    async allReduce(tensors, op) {
      const k = round++
      const mine: Contribution = { round: k, op, tensors: tensors.map((t) => ({ shape: [...t.shape], dtype: t.dtype, data: t.data.slice() }) as HostTensor) }
      for (const p of ports) p?.postMessage(mine)
      const parts = slot(k)
      parts[rank] = mine
      if (parts.some((c) => c === undefined))
        await new Promise<void>((resolve) => waiting.set(k, () => parts.every((c) => c !== undefined) && resolve()))
      waiting.delete(k)
      inbox.delete(k)
      const all = parts as Contribution[]
      all.forEach((c, r) => {
        if (c.op !== op) throw new TesseraError('runtime', 'all_reduce', `round ${k}: rank ${r} asked for ${c.op}, rank ${rank} for ${op}`)
        if (c.tensors.length !== tensors.length)
          throw new TesseraError('runtime', 'all_reduce', `round ${k}: rank ${r} reduced ${c.tensors.length} tensor(s), rank ${rank} ${tensors.length}`)
      })
      return tensors.map((_, i) => combineRanks(all.map((c) => c.tensors[i]!), op))
    },
    close() {
      for (const p of ports) p?.close()
    },
  }
}

/** What a rank's entry function gets. */
export interface RankContext<D> {
  readonly rank: number
  readonly size: number
  readonly collective: Collective
  readonly data: D
}

const MARK = '__tesseraRank'

interface RankWorkerData<D> {
  readonly [MARK]: RankHandle
  readonly data: D
}

type RankReply<R> = { readonly ok: R } | { readonly error: { readonly kind: ErrorKind; readonly where: string; readonly message: string } }

/**
 * The body of a rank's entry module: `rankMain(async ({ collective, data }) => result)`. It
 * connects the rank's collective, runs `fn`, posts its result (or its error) to `runRanks` and
 * closes the ports.
 */
export function rankMain<D, R>(fn: (ctx: RankContext<D>) => R | Promise<R>): void {
  const wt = workerThreads('rankMain')
  const wd = wt.workerData as RankWorkerData<D> | undefined
  const parent = wt.parentPort
  if (!parent || !wd || !wd[MARK]) throw new TesseraError('input', 'rankMain', 'rankMain runs in a worker thread started by runRanks')
  const collective = connectRank(wd[MARK])
  const reply = (m: RankReply<R>) => {
    collective.close()
    parent.postMessage(m)
  }
  Promise.resolve()
    .then(() => fn({ rank: collective.rank, size: collective.size, collective, data: wd.data }))
    .then(
      (ok) => reply({ ok }),
      (e: unknown) => {
        const t = e instanceof TesseraError ? e : undefined
        reply({ error: { kind: t?.kind ?? 'runtime', where: t?.where ?? 'rankMain', message: e instanceof Error ? e.message : String(e) } })
      },
    )
}

export interface RunRanksOptions {
  /** Node flags of the worker threads (the default is the parent's). */
  readonly execArgv?: readonly string[]
  /** Stop every rank and answer a Left after this many milliseconds. */
  readonly timeoutMs?: number
}

/**
 * Starts `size` worker threads on `entry` (a module that calls `rankMain`), rank r with `data(r)`
 * (or `data`), and resolves with their results in rank order. When one rank fails, every rank is
 * stopped (the others would wait for it forever) and the Left names the failing rank.
 */
export function runRanks<D, R>(
  size: number,
  entry: URL | string,
  data: D | ((rank: number) => D),
  opts: RunRanksOptions = {},
): Promise<E.Either<TesseraError, R[]>> {
  let handles: RankHandle[]
  let wt: WorkerThreads
  try {
    wt = workerThreads('runRanks')
    handles = meshHandles(size)
  } catch (e) {
    return Promise.resolve(E.left(e as TesseraError))
  }
  return new Promise((resolve) => {
    const results = new Array<R>(size)
    let done = 0
    let settled = false
    const workers: Worker[] = []
    let timer: ReturnType<typeof setTimeout> | undefined
    const finish = (r: E.Either<TesseraError, R[]>) => {
      if (settled) return
      settled = true
      if (timer) clearTimeout(timer)
      for (const w of workers) void w.terminate()
      resolve(r)
    }
    const fail = (rank: number, kind: ErrorKind, message: string) => finish(E.left(new TesseraError(kind, `rank ${rank}`, message)))
    if (opts.timeoutMs !== undefined) timer = setTimeout(() => finish(E.left(new TesseraError('runtime', 'runRanks', `the ranks did not finish within ${opts.timeoutMs} ms`))), opts.timeoutMs)
    handles.forEach((h, rank) => {
      const d = typeof data === 'function' ? (data as (r: number) => D)(rank) : data
      const ports = h.ports.filter((p): p is MessagePort => p !== null)
      let w: Worker
      try {
        w = new wt.Worker(entry, {
          workerData: { [MARK]: h, data: d } satisfies RankWorkerData<D>,
          transferList: ports as never,
          ...(opts.execArgv ? { execArgv: [...opts.execArgv] } : {}),
        })
      } catch (e) {
        fail(rank, 'backend', e instanceof Error ? e.message : String(e))
        return
      }
      workers.push(w)
      let replied = false
      w.on('message', (m: RankReply<R>) => {
        replied = true
        if ('error' in m) return fail(rank, m.error.kind, m.error.message)
        results[rank] = m.ok
        if (++done === size) finish(E.right(results))
      })
      w.on('error', (e) => fail(rank, 'runtime', e instanceof Error ? e.message : String(e)))
      w.on('exit', (code) => {
        if (!replied) fail(rank, 'runtime', `the worker exited (code ${code}) before answering`)
      })
    })
  })
}
