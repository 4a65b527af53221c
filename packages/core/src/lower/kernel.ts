import type { DType } from '../dtype.js'
import { dtypeShort } from '../dtype.js'
import type { ElemPrim } from '../prim.js'

/**
 * The body of one fused kernel: a small DAG of scalar nodes evaluated once per output element
 * (`thread` is the flat output index). At most one `reduce` node holds a loop with a literal
 * bound; nodes that depend on the loop index (`ridx`) run inside it, nodes that depend on the
 * loop's result form the epilogue. Movement ops never appear here: they became index arithmetic.
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
  | { readonly k: 'ridx' }
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
  | { readonly k: 'reduce'; readonly op: ReduceOp; readonly size: number; readonly body: NodeId; readonly dtype: DType }

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
  loopSize = 0

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
  ridx(): NodeId {
    return this.add({ k: 'ridx' }, this.loopSize)
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
  reduce(op: ReduceOp, size: number, body: NodeId, dtype: DType): NodeId {
    return this.add({ k: 'reduce', op, size, body, dtype })
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
 * The order to evaluate a kernel's nodes: before the loop, inside it, after it. Several
 * reductions of the same length share the one loop (each keeps its own accumulator).
 */
export interface Schedule {
  readonly pre: readonly NodeId[]
  readonly loop?: { readonly size: number; readonly reduces: readonly NodeId[]; readonly body: readonly NodeId[] }
  readonly post: readonly NodeId[]
}

export function scheduleKernel(k: Kernel): Schedule {
  const inLoop: boolean[] = []
  const afterLoop: boolean[] = []
  const reduces: NodeId[] = []
  k.nodes.forEach((n, i) => {
    const ds = deps(n)
    inLoop[i] = n.k === 'ridx' || (n.k !== 'reduce' && ds.some((d) => inLoop[d]))
    afterLoop[i] = n.k === 'reduce' || ds.some((d) => afterLoop[d])
    if (n.k === 'reduce') reduces.push(i)
  })
  const pre: NodeId[] = [], body: NodeId[] = [], post: NodeId[] = []
  k.nodes.forEach((n, i) => {
    if (n.k === 'reduce') return
    if (inLoop[i]) body.push(i)
    else if (afterLoop[i]) post.push(i)
    else pre.push(i)
  })
  if (reduces.length === 0) return { pre, post }
  const size = (k.nodes[reduces[0]!] as Extract<KNode, { k: 'reduce' }>).size
  return { pre, loop: { size, reduces, body }, post }
}

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
    if (n.k === 'ridx') return 'r'
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
  emit(s.pre, '  ')
  if (s.loop) {
    out.push(`  loop r<${s.loop.size} {`)
    emit(s.loop.body, '    ')
    for (const id of s.loop.reduces) {
      const rn = k.nodes[id] as Extract<KNode, { k: 'reduce' }>
      out.push(`    %${id} = ${rn.op} ${ref(rn.body)}`)
    }
    out.push('  }')
  }
  emit(s.post, '  ')
  out.push(`  return ${ref(k.root)}`)
  return out.join('\n')
}
