import type { DType } from '../dtype.js'
import { dtypeShort } from '../dtype.js'
import type { ElemPrim } from '../prim.js'

/**
 * The body of one fused kernel: a small DAG of scalar nodes evaluated once per output element
 * (`thread` is the flat output index). `reduce` nodes hold loops with literal bounds: those of
 * level 0 share the outer loop, those of level 1 a loop nested inside it (nearest-code search:
 * an argmin over codes whose body is a dot product). Nodes that depend on a loop's index
 * (`ridx` of that level) run inside it, nodes that depend on its result after it. Movement ops
 * never appear here: they became index arithmetic.
 */
export type NodeId = number

/** Index arithmetic on non-negative integers: floor(x / n), x mod n for a literal n >= 1. */
export type IndexOp = 'ixdiv' | 'ixmod'

/**
 * Elementwise operations a node may apply: every elementwise primitive (computed from the facts
 * table, so a new one reaches every codegen table's type) except stop_gradient, which lowers to
 * its operand, plus the index helpers.
 */
export type ElemOp = Exclude<ElemPrim, 'stop_gradient'> | IndexOp

export type ReduceOp = 'sum' | 'max' | 'min' | 'argmin' | 'argmax'

export type KNode =
  | { readonly k: 'thread' }
  /** The index of the loop of `level` (absent: 0, the outermost). */
  | { readonly k: 'ridx'; readonly level?: number }
  | { readonly k: 'lit'; readonly value: number; readonly dtype: DType }
  | { readonly k: 'load'; readonly buf: number; readonly at: NodeId; readonly dtype: DType }
  | {
      readonly k: 'op'
      readonly op: ElemOp
      readonly args: readonly NodeId[]
      readonly dtype: DType
      /** divisor of ixdiv/ixmod */
      readonly n?: number
      /** a product feeding a sum that keeps full precision (matmul: the reference accumulates unrounded products) */
      readonly wide?: boolean
    }
  | { readonly k: 'reduce'; readonly op: ReduceOp; readonly size: number; readonly body: NodeId; readonly dtype: DType; readonly level?: number }

export interface Kernel {
  /** buffer written (one output per kernel) */
  readonly out: number
  readonly size: number
  readonly dtype: DType
  /** buffers read, in order of first use: the kernel's arguments */
  readonly args: readonly number[]
  readonly nodes: readonly KNode[]
  readonly root: NodeId
}

export const nodeDtype = (n: KNode): DType => (n.k === 'thread' || n.k === 'ridx' ? 'int32' : n.dtype)

/**
 * Builds kernel nodes with hash-consing (equal subexpressions share a node) and folding of index
 * arithmetic, tracking an exclusive upper bound of each index value so that `x mod n` and
 * `x / n` disappear when the bound proves them trivial.
 */
export class KernelBuilder {
  readonly nodes: KNode[] = []
  private readonly memo = new Map<string, NodeId>()
  private readonly hi: (number | undefined)[] = []
  /** Length of the loop of each nesting level (0: outermost), set before its body is built. */
  readonly loopSizes: number[] = []

  constructor(readonly size: number) {}

  private add(n: KNode, hi?: number): NodeId {
    const key = JSON.stringify(n)
    const got = this.memo.get(key)
    if (got !== undefined) return got
    const id = this.nodes.length
    this.nodes.push(Object.freeze(n))
    this.hi.push(hi)
    this.memo.set(key, id)
    return id
  }

  node(id: NodeId): KNode {
    return this.nodes[id]!
  }

  bound(id: NodeId): number | undefined {
    return this.hi[id]
  }

  litValue(id: NodeId): number | undefined {
    const n = this.nodes[id]!
    return n.k === 'lit' ? n.value : undefined
  }

  thread(): NodeId {
    return this.add({ k: 'thread' }, this.size)
  }
  ridx(level = 0): NodeId {
    return this.add(level === 0 ? { k: 'ridx' } : { k: 'ridx', level }, this.loopSizes[level])
  }
  lit(value: number, dtype: DType): NodeId {
    const v = dtype === 'bool' ? (value ? 1 : 0) : value
    return this.add({ k: 'lit', value: v, dtype }, dtype !== 'float32' && v >= 0 ? v + 1 : undefined)
  }
  ilit(v: number): NodeId {
    return this.lit(v, 'int32')
  }
  load(buf: number, at: NodeId, dtype: DType): NodeId {
    return this.add({ k: 'load', buf, at, dtype })
  }
  op(op: ElemOp, args: readonly NodeId[], dtype: DType, extra: { wide?: boolean } = {}): NodeId {
    return this.add(extra.wide ? { k: 'op', op, args, dtype, wide: true } : { k: 'op', op, args, dtype })
  }
  reduce(op: ReduceOp, size: number, body: NodeId, dtype: DType, level = 0): NodeId {
    return this.add(level === 0 ? { k: 'reduce', op, size, body, dtype } : { k: 'reduce', op, size, body, dtype, level })
  }

  // ---- index arithmetic (int32, non-negative values) ----

  iadd(a: NodeId, b: NodeId): NodeId {
    const la = this.litValue(a), lb = this.litValue(b)
    if (la !== undefined && lb !== undefined) return this.ilit(la + lb)
    if (la === 0) return b
    if (lb === 0) return a
    const ha = this.hi[a], hb = this.hi[b]
    const hi = ha !== undefined && hb !== undefined ? ha + hb - 1 : undefined
    return this.add({ k: 'op', op: 'add', args: la !== undefined ? [b, a] : [a, b], dtype: 'int32' }, hi)
  }

  imul(a: NodeId, c: number): NodeId {
    const la = this.litValue(a)
    if (la !== undefined) return this.ilit(la * c)
    if (c === 0) return this.ilit(0)
    if (c === 1) return a
    const ha = this.hi[a]
    return this.add({ k: 'op', op: 'mul', args: [a, this.ilit(c)], dtype: 'int32' }, ha !== undefined ? (ha - 1) * c + 1 : undefined)
  }

  /** a = b*c + d with d known in [0, c): returns [b, d] */
  private splitMulAdd(a: NodeId, c: number): [NodeId, NodeId] | undefined {
    const n = this.nodes[a]!
    const isMulC = (id: NodeId): NodeId | undefined => {
      const m = this.nodes[id]!
      return m.k === 'op' && m.op === 'mul' && this.litValue(m.args[1]!) === c ? m.args[0] : undefined
    }
    const direct = isMulC(a)
    if (direct !== undefined) return [direct, this.ilit(0)]
    if (n.k === 'op' && n.op === 'add') {
      const [x, y] = n.args as [NodeId, NodeId]
      const hy = this.hi[y], hx = this.hi[x]
      const bx = isMulC(x)
      if (bx !== undefined && hy !== undefined && hy <= c) return [bx, y]
      const by = isMulC(y)
      if (by !== undefined && hx !== undefined && hx <= c) return [by, x]
    }
    return undefined
  }

  idivc(a: NodeId, c: number): NodeId {
    const la = this.litValue(a)
    if (la !== undefined) return this.ilit(Math.floor(la / c))
    if (c === 1) return a
    const ha = this.hi[a]
    if (ha !== undefined && ha <= c) return this.ilit(0)
    const sp = this.splitMulAdd(a, c)
    if (sp) return sp[0]
    const n = this.nodes[a]!
    if (n.k === 'op' && n.op === 'ixdiv') return this.idivc(n.args[0]!, n.n! * c)
    return this.add(
      { k: 'op', op: 'ixdiv', args: [a], dtype: 'int32', n: c },
      ha !== undefined ? Math.ceil(ha / c) : undefined,
    )
  }

  imodc(a: NodeId, c: number): NodeId {
    const la = this.litValue(a)
    if (la !== undefined) return this.ilit(la % c)
    if (c === 1) return this.ilit(0)
    const ha = this.hi[a]
    if (ha !== undefined && ha <= c) return a
    const sp = this.splitMulAdd(a, c)
    if (sp) return sp[1]
    return this.add({ k: 'op', op: 'ixmod', args: [a], dtype: 'int32', n: c }, Math.min(c, ha ?? c))
  }

  /** clamp an int index into [0, d) */
  iclamp(a: NodeId, d: number): NodeId {
    const ha = this.hi[a]
    const la = this.litValue(a)
    if (la !== undefined) return this.ilit(Math.min(Math.max(la, 0), d - 1))
    const lo = this.add({ k: 'op', op: 'max', args: [a, this.ilit(0)], dtype: 'int32' }, ha === undefined ? undefined : Math.max(ha, 1))
    if (ha !== undefined && ha <= d) return lo
    return this.add({ k: 'op', op: 'min', args: [lo, this.ilit(d - 1)], dtype: 'int32' }, d)
  }

  /** add a (possibly negative) literal offset to an index; the result may leave [0, ...) */
  ioffset(a: NodeId, off: number): NodeId {
    if (off === 0) return a
    const la = this.litValue(a)
    if (la !== undefined) return this.ilit(la + off)
    const ha = this.hi[a]
    return this.add(
      { k: 'op', op: 'add', args: [a, this.ilit(off)], dtype: 'int32' },
      ha !== undefined ? Math.max(ha + off, 1) : undefined,
    )
  }

  finish(out: number, dtype: DType, root: NodeId): Kernel {
    // keep only nodes reachable from the root, renumbered in order
    const live = new Set<NodeId>()
    const visit = (id: NodeId) => {
      if (live.has(id)) return
      live.add(id)
      for (const d of deps(this.nodes[id]!)) visit(d)
    }
    visit(root)
    const order = [...live].sort((a, b) => a - b)
    const remap = new Map(order.map((id, i) => [id, i]))
    const r = (id: NodeId) => remap.get(id)!
    const nodes = order.map((id): KNode => {
      const n = this.nodes[id]!
      switch (n.k) {
        case 'load':
          return { ...n, at: r(n.at) }
        case 'op':
          return { ...n, args: n.args.map(r) }
        case 'reduce':
          return { ...n, body: r(n.body) }
        default:
          return n
      }
    })
    const args: number[] = []
    for (const n of nodes) if (n.k === 'load' && !args.includes(n.buf)) args.push(n.buf)
    return Object.freeze({ out, size: this.size, dtype, args, nodes, root: r(root) })
  }
}

export function deps(n: KNode): readonly NodeId[] {
  switch (n.k) {
    case 'load':
      return [n.at]
    case 'op':
      return n.args
    case 'reduce':
      return [n.body]
    default:
      return []
  }
}

/**
 * The order to evaluate a kernel's nodes: before the loop, inside it (itself a schedule, which
 * may hold the nested loop), after it. Several reductions of the same level share one loop
 * (each keeps its own accumulator).
 */
export interface Schedule {
  readonly pre: readonly NodeId[]
  readonly loop?: KernelLoop
  readonly post: readonly NodeId[]
}

export interface KernelLoop {
  readonly size: number
  readonly level: number
  readonly reduces: readonly NodeId[]
  readonly body: Schedule
}

export const loopLevel = (n: KNode): number => (n.k === 'ridx' || n.k === 'reduce' ? (n.level ?? 0) : 0)

export function scheduleKernel(k: Kernel): Schedule {
  // depth: how many loops a node sits in; a reduce's result sits outside its own loop
  const depth: number[] = []
  const after: boolean[] = []
  k.nodes.forEach((n, i) => {
    const ds = deps(n)
    depth[i] = n.k === 'ridx' ? loopLevel(n) + 1 : n.k === 'reduce' ? loopLevel(n) : Math.max(0, ...ds.map((d) => depth[d]!))
    after[i] = n.k === 'reduce' || ds.some((d) => depth[d] === depth[i] && after[d])
  })
  const build = (d: number): Schedule => {
    const pre: NodeId[] = [], post: NodeId[] = [], reduces: NodeId[] = []
    k.nodes.forEach((n, i) => {
      if (depth[i] !== d) return
      if (n.k === 'reduce') reduces.push(i)
      else (after[i] ? post : pre).push(i)
    })
    if (reduces.length === 0) return { pre, post }
    const size = (k.nodes[reduces[0]!] as Extract<KNode, { k: 'reduce' }>).size
    return { pre, loop: { size, level: d, reduces, body: build(d + 1) }, post }
  }
  return build(0)
}

/** The largest loop length of a schedule, nested loops included. */
export function maxLoopSize(s: Schedule): number {
  return s.loop ? Math.max(s.loop.size, maxLoopSize(s.loop.body)) : 0
}

/** Name of a loop index in prints and generated code: `r` for the outer loop, `r1` for the nested one. */
export const loopIndexName = (level: number): string => (level === 0 ? 'r' : `r${level}`)

function fmtLit(v: number, dtype: DType): string {
  const s = Object.is(v, -0) ? '-0' : String(v)
  return dtype === 'float32' ? `${s}f` : dtype === 'bool' ? (v ? 'true' : 'false') : s
}

/** A readable print of one kernel, pinned in tests. */
export function printKernel(k: Kernel, bufName: (b: number) => string = (b) => `b${b}`): string {
  const s = scheduleKernel(k)
  const ref = (id: NodeId): string => {
    const n = k.nodes[id]!
    if (n.k === 'lit') return fmtLit(n.value, n.dtype)
    if (n.k === 'thread') return 'i'
    if (n.k === 'ridx') return loopIndexName(loopLevel(n))
    return `%${id}`
  }
  const line = (id: NodeId): string | undefined => {
    const n = k.nodes[id]!
    switch (n.k) {
      case 'lit':
      case 'thread':
      case 'ridx':
        return undefined
      case 'load':
        return `%${id} = ${bufName(n.buf)}[${ref(n.at)}]`
      case 'op': {
        const name = n.op === 'cast' ? `cast<${dtypeShort[n.dtype]}>` : n.n !== undefined ? `${n.op}<${n.n}>` : n.wide ? `${n.op}.wide` : n.op
        return `%${id} = ${name} ${n.args.map(ref).join(' ')}`
      }
      case 'reduce':
        return undefined
    }
  }
  const out: string[] = []
  const emit = (ids: readonly NodeId[], ind: string) => {
    for (const id of ids) {
      const l = line(id)
      if (l) out.push(ind + l)
    }
  }
  const block = (sc: Schedule, ind: string): void => {
    emit(sc.pre, ind)
    if (sc.loop) {
      out.push(`${ind}loop ${loopIndexName(sc.loop.level)}<${sc.loop.size} {`)
      block(sc.loop.body, ind + '  ')
      for (const id of sc.loop.reduces) {
        const rn = k.nodes[id] as Extract<KNode, { k: 'reduce' }>
        out.push(`${ind}  %${id} = ${rn.op} ${ref(rn.body)}`)
      }
      out.push(`${ind}}`)
    }
    emit(sc.post, ind)
  }
  block(s, '  ')
  out.push(`  return ${ref(k.root)}`)
  return out.join('\n')
}
