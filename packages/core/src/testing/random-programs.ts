import fc from 'fast-check'
import type { Tensor } from '../builder.js'
import { concat, where } from '../builder.js'
import type { Caps } from '../backend.js'
import { traceOrThrow } from '../trace.js'
import type { ProgramCase } from './arbitraries.js'
import { floatIn, hostArb } from './arbitraries.js'

/**
 * Random programs: expression DAGs over two inputs of one small shape [m, n]. Every node keeps
 * that shape and keeps its values inside [-4, 4] (inputs are in [-4, 4]; each node is written so
 * that bounded operands give a bounded result), so no op leaves its safe domain and errors do
 * not blow up. Only ops whose result is continuous in their operands appear (no floor, round,
 * comparisons as outputs, argmin): a one-ulp difference cannot flip a result, so the comparison
 * with the reference can use a tolerance.
 */
export type UnOp = 'neg' | 'abs' | 'tanh' | 'expTanh' | 'log1pAbs' | 'sqrtAbs' | 'sigmoid'
export type BinOp = 'avg' | 'halfDiff' | 'quarterProd' | 'max' | 'min' | 'divSafe' | 'powSafe' | 'select'

export type Node =
  | { readonly k: 'input'; readonly i: number }
  | { readonly k: 'fill'; readonly v: number }
  | { readonly k: 'iota'; readonly axis: number }
  | { readonly k: 'unary'; readonly op: UnOp; readonly x: Node }
  | { readonly k: 'binary'; readonly op: BinOp; readonly x: Node; readonly y: Node }
  /** op(x, un(x)): one value with two consumers */
  | { readonly k: 'shared'; readonly op: BinOp; readonly un: UnOp; readonly x: Node }
  | { readonly k: 'mean'; readonly axis: number; readonly x: Node }
  | { readonly k: 'extreme'; readonly max: boolean; readonly axis: number; readonly x: Node }
  | { readonly k: 'matmul'; readonly x: Node; readonly y: Node }
  | { readonly k: 'gather'; readonly idx: readonly number[]; readonly x: Node }
  | { readonly k: 'splice'; readonly at: number; readonly x: Node; readonly y: Node }
  | { readonly k: 'shift'; readonly x: Node }
  | { readonly k: 'flip'; readonly x: Node }

const unOps: readonly UnOp[] = ['neg', 'abs', 'tanh', 'expTanh', 'log1pAbs', 'sqrtAbs', 'sigmoid']
const binOps: readonly BinOp[] = ['avg', 'halfDiff', 'quarterProd', 'max', 'min', 'divSafe', 'powSafe', 'select']

export const nodeArb: fc.Arbitrary<Node> = fc.letrec<{ node: Node }>((tie) => {
  const node = tie('node')
  const unOp = fc.constantFrom(...unOps)
  const binOp = fc.constantFrom(...binOps)
  const axis = fc.integer({ min: 0, max: 1 })
  return {
    node: fc.oneof(
      { depthSize: 'small', maxDepth: 6, withCrossShrink: true },
      fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: 0, max: 1 }).map((i): Node => ({ k: 'input', i })) },
        { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }).map((v): Node => ({ k: 'fill', v: v / 4 })) },
        { weight: 1, arbitrary: axis.map((a): Node => ({ k: 'iota', axis: a })) },
      ),
      fc.record({ k: fc.constant('unary' as const), op: unOp, x: node }),
      fc.record({ k: fc.constant('binary' as const), op: binOp, x: node, y: node }),
      fc.record({ k: fc.constant('shared' as const), op: binOp, un: unOp, x: node }),
      fc.record({ k: fc.constant('mean' as const), axis, x: node }),
      fc.record({ k: fc.constant('extreme' as const), max: fc.boolean(), axis, x: node }),
      fc.record({ k: fc.constant('matmul' as const), x: node, y: node }),
      fc.record({ k: fc.constant('gather' as const), idx: fc.array(fc.nat(), { minLength: 4, maxLength: 4 }), x: node }),
      fc.record({ k: fc.constant('splice' as const), at: fc.nat(), x: node, y: node }),
      fc.record({ k: fc.constant('shift' as const), x: node }),
      fc.record({ k: fc.constant('flip' as const), x: node }),
    ),
  }
}).node

function unary(op: UnOp, x: Tensor): Tensor {
  switch (op) {
    case 'neg': return x.neg()
    case 'abs': return x.abs()
    case 'tanh': return x.tanh()
    case 'expTanh': return x.tanh().exp()
    case 'log1pAbs': return x.abs().add(1).log()
    case 'sqrtAbs': return x.abs().sqrt()
    case 'sigmoid': return x.sigmoid()
  }
}

function binary(op: BinOp, x: Tensor, y: Tensor): Tensor {
  switch (op) {
    case 'avg': return x.add(y).mul(0.5)
    case 'halfDiff': return x.sub(y).mul(0.5)
    case 'quarterProd': return x.mul(y).mul(0.25)
    case 'max': return x.maximum(y)
    case 'min': return x.minimum(y)
    case 'divSafe': return x.div(y.abs().add(1))
    case 'powSafe': return x.abs().mul(0.25).add(1).pow(y.tanh())
    // where(x < y, x, y) is min(x, y) written with a comparison and a select
    case 'select': return where(x.lt(y), x, y)
  }
}

/** Build a node over inputs [a, b] of shape [m, n]; every result has shape [m, n]. */
export function buildNode(node: Node, ins: readonly Tensor[]): Tensor {
  const a = ins[0]!
  const [m, n] = a.shape as [number, number]
  const go = (nd: Node): Tensor => {
    switch (nd.k) {
      case 'input': return ins[nd.i % ins.length]!
      case 'fill': return a.builder.full([m, n], nd.v)
      case 'iota': return a.builder.iota([m, n], nd.axis, 'float32').mul(0.5)
      case 'unary': return unary(nd.op, go(nd.x))
      case 'binary': return binary(nd.op, go(nd.x), go(nd.y))
      case 'shared': {
        const x = go(nd.x)
        return binary(nd.op, x, unary(nd.un, x))
      }
      case 'mean': return go(nd.x).mean(nd.axis, true).broadcastTo([m, n])
      case 'extreme': {
        const x = go(nd.x)
        return (nd.max ? x.max(nd.axis, true) : x.min(nd.axis, true)).broadcastTo([m, n])
      }
      case 'matmul': {
        // w = y^T tanh(y) / m is [n, n] in [-4, 4]; tanh(x) w / n is [m, n] in [-4, 4]
        const y = go(nd.y)
        const w = y.mT.matmul(y.tanh()).div(m)
        return go(nd.x).tanh().matmul(w).div(n)
      }
      case 'gather': {
        const idx = a.builder.constant(nd.idx.slice(0, m).map((v) => v % m), [m], 'int32')
        return go(nd.x).gather(idx, 0)
      }
      case 'splice': {
        const x = go(nd.x), y = go(nd.y)
        if (n < 2) return binary('avg', x, y)
        const at = 1 + (nd.at % (n - 1))
        return concat([x.sliceAxis(1, 0, at), y.sliceAxis(1, at)], 1)
      }
      case 'shift': {
        const x = go(nd.x)
        const ax = m > 1 ? 0 : n > 1 ? 1 : -1
        if (ax < 0) return x.neg()
        const lo = [0, 0], hi = [0, 0]
        hi[ax] = 1
        return x.sliceAxis(ax, 1).pad(lo, hi, 0.25)
      }
      case 'flip': return go(nd.x).reshape([n, m]).transpose()
    }
  }
  return go(node)
}

export const countNodes = (nd: Node): number => {
  switch (nd.k) {
    case 'input': case 'fill': case 'iota': return 1
    case 'unary': case 'shared': case 'mean': case 'extreme': case 'gather': case 'shift': case 'flip': return 1 + countNodes(nd.x)
    case 'binary': case 'matmul': case 'splice': return 1 + countNodes(nd.x) + countNodes(nd.y)
  }
}

export interface RandomProgramCase extends ProgramCase {
  readonly roots: readonly Node[]
}

/** One or two output expressions over inputs f32[m,n] x 2, with input data in [-4, 4]. */
export const randomProgramArb: fc.Arbitrary<RandomProgramCase> = fc
  .tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), fc.array(nodeArb, { minLength: 1, maxLength: 2 }))
  .chain(([m, n, roots]) =>
    fc.tuple(hostArb([m, n], 'float32', floatIn(-4, 4)), hostArb([m, n], 'float32', floatIn(-4, 4))).map(([x, y]) => {
      const { program } = traceOrThrow([x, y], (a, b) => roots.map((r) => buildNode(r, [a, b])))
      return { program, inputs: [x, y], roots }
    }),
  )

/**
 * The tolerance of a whole random program. Values stay in [-4, 4] and no node amplifies an
 * error by more than a small factor, so each equation may add at most 64 * (atol + rtols) of
 * error. (With the reference's caps, all zero, this is exact agreement.)
 */
export function randomProgramTolerance(caps: Caps, eqnCount: number): number {
  return eqnCount * 64 * (caps.atol + caps.rtol + caps.transcendentalRtol)
}
