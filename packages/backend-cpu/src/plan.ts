import type { AnyTypedArray, Backend, Caps, DType, Executable, HostTensor, IndexOp, Kernel, KNode, Plan, Program, Schedule } from '@tessera/core'
import { TesseraError, allocate, applyPrim, castTo, disposedError, checkAvals, checkIntoOrThrow, writeInto, loopLevel, lowerProgram, nanMax, nanMin, random, scalarFn, scheduleKernel, unaliasOutputs } from '@tessera/core'

/**
 * A second CPU path: lower a program into the fused plan the GPU backends run, then interpret
 * the plan kernel by kernel, node by node. Scalar semantics are the reference's own table (core's
 * scalar.ts: float32 rounding after every op, half-to-even round, floor division), with float64
 * accumulation in sums and matmul and first-index ties as in the reference, so any difference
 * from `interpretProgram` is a fusion bug.
 */
export interface FusedCpuOptions {
  /** Most buffers one kernel may read; small values exercise kernel splitting. */
  readonly maxKernelArgs?: number
  /**
   * A GPU's limits, to run its lowering here: values of this many elements or more are never
   * stored (recomputed, their reductions nested), and loops longer than `maxLoop` are split.
   */
  readonly exactIntLimit?: number
  readonly maxLoop?: number
}

export function fusedCpuCaps(opts: FusedCpuOptions = {}): Caps {
  return {
    exactIntLimit: opts.exactIntLimit ?? 2 ** 31,
    strictNaN: true,
    maxKernelArgs: opts.maxKernelArgs ?? 16,
    ...(opts.maxLoop !== undefined ? { maxLoop: opts.maxLoop } : {}),
    maxTextureSize: Infinity,
    atol: 0,
    rtol: 0,
    transcendentalRtol: 0,
    fuses: true,
  }
}

export function fusedCpuBackend(opts: FusedCpuOptions = {}): Backend & { plan(program: Program): Plan } {
  const caps = fusedCpuCaps(opts)
  let disposed = false
  return {
    name: 'cpu-fused',
    caps,
    plan: (program) => lowerProgram(program, caps),
    compile(program: Program): Executable {
      if (disposed) throw disposedError('cpu-fused')
      const plan = lowerProgram(program, caps)
      return {
        run: async (inputs, options) => {
          if (disposed) throw disposedError('cpu-fused')
          const ok = checkAvals('cpu-fused', program.inputs.map((v) => v.aval), inputs)
          if (ok._tag === 'Left') throw ok.left
          checkIntoOrThrow('cpu-fused', () => program.outputs.map((v) => v.aval), inputs, options?.into)
          // an output that is an input (or a view of one) is copied: the caller owns its arrays
          return writeInto(unaliasOutputs(inputs, runPlan(plan, inputs)), options?.into)
        },
        dispose() {},
      }
    },
    dispose: async () => {
      disposed = true
    },
  }
}

type OpNode = Extract<KNode, { k: 'op' }>
type NodeFn = (a: number, b: number, c: number) => number

/** Index helpers are kernel-only ops (no primitive): floor(x / n) and x mod n on non-negative ints. */
const indexOps: { readonly [O in IndexOp]: (n: OpNode) => NodeFn } = {
  ixdiv: (n) => (a) => Math.floor(a / n.n!),
  ixmod: (n) => (a) => a % n.n!,
}

/**
 * The scalar function one op node computes, looked up once per kernel. Every elementwise op is
 * core's scalar rule (the reference's own, so values match it bit for bit); `argDtype` is the
 * dtype of the node's first operand, which selects the rule, except for cast (keyed by its
 * target) and where (keyed by its branches, the node's dtype).
 */
function nodeFn(n: OpNode, argDtype: DType): NodeFn {
  switch (n.op) {
    case 'ixdiv':
    case 'ixmod':
      return indexOps[n.op](n)
    case 'cast':
    case 'where':
      return scalarFn(n.op, n.dtype) as NodeFn
    case 'add':
    case 'mul':
      // matmul's products and their sum stay unrounded, as the reference accumulates in float64
      if (n.wide && argDtype === 'float32') return n.op === 'add' ? (a, b) => a + b : (a, b) => a * b
      return scalarFn(n.op, argDtype) as NodeFn
    default:
      return scalarFn(n.op, argDtype) as NodeFn
  }
}

function runKernel(k: Kernel, bufs: Map<number, AnyTypedArray>): AnyTypedArray {
  const sched = scheduleKernel(k)
  const out = allocate(k.dtype, k.size)
  const vals = new Float64Array(k.nodes.length)
  const fns = k.nodes.map((n) => (n.k === 'op' ? nodeFn(n, nodeDt(k.nodes[n.args[0]!]!)) : undefined))
  const data = k.nodes.map((n) => (n.k === 'load' ? bufs.get(n.buf) : undefined))
  let thread = 0
  const ridx: number[] = []
  const evalNode = (id: number) => {
    const n = k.nodes[id]!
    switch (n.k) {
      case 'thread': vals[id] = thread; break
      case 'ridx': vals[id] = ridx[loopLevel(n)]!; break
      // a literal is a value of its dtype: the reference fills a float32 tensor with fround(value)
      case 'lit': vals[id] = castTo(n.dtype, n.value); break
      case 'load': {
        const at = vals[n.at]!
        const d = data[id]!
        if (!(at >= 0 && at < d.length))
          // a plan that indexes outside a buffer is a lowering bug, not bad user data
          throw new TesseraError('backend', 'cpu-fused', `kernel for b${k.out} reads b${n.buf}[${at}] outside its ${d.length} elements`)
        vals[id] = d[at]!
        break
      }
      case 'op':
        vals[id] = fns[id]!(vals[n.args[0]!]!, vals[n.args[1]!] ?? 0, vals[n.args[2]!] ?? 0)
        break
      case 'reduce':
        break
    }
  }
  /** Evaluates a schedule once: its loop (and any loop nested in it) runs to completion in between. */
  const run = (s: Schedule): void => {
    for (const id of s.pre) evalNode(id)
    const loop = s.loop
    if (loop) {
      const reds = loop.reduces.map((id) => {
        const n = k.nodes[id] as Extract<KNode, { k: 'reduce' }>
        return { id, n, isInt: nodeDt(k.nodes[n.body]!) === 'int32', acc: 0, best: 0 }
      })
      const L = loop.level
      for (let r = 0; r < loop.size; r++) {
        ridx[L] = r
        run(loop.body)
        for (const red of reds) {
          const v = vals[red.n.body]!
          switch (red.n.op) {
            case 'sum':
              red.acc = red.isInt ? (red.acc + v) | 0 : red.acc + v
              break
            case 'max':
              red.acc = r === 0 ? v : nanMax(red.acc, v)
              break
            case 'min':
              red.acc = r === 0 ? v : nanMin(red.acc, v)
              break
            case 'argmin':
            case 'argmax':
              if (r === 0) {
                red.best = v
                red.acc = 0
              } else if (red.best === red.best && (v !== v || (red.n.op === 'argmin' ? v < red.best : v > red.best))) {
                red.best = v
                red.acc = r
              }
              break
          }
        }
      }
      for (const red of reds) vals[red.id] = red.n.dtype === 'float32' ? Math.fround(red.acc) : red.acc
    }
    for (const id of s.post) evalNode(id)
  }
  for (thread = 0; thread < k.size; thread++) {
    run(sched)
    out[thread] = vals[k.root]!
  }
  return out
}

const nodeDt = (n: KNode): DType => (n.k === 'thread' || n.k === 'ridx' ? 'int32' : n.dtype)

/** Interpret a fused plan on the host. */
export function runPlan(plan: Plan, inputs: readonly HostTensor[]): HostTensor[] {
  const bufs = new Map<number, AnyTypedArray>()
  plan.inputs.forEach((b, i) => bufs.set(b, inputs[i]!.data))
  for (const g of plan.gatherIndexInputs) checkGatherIndices(bufs.get(g.buf)!, g.bound, g.axis)
  for (const b of plan.buffers) if (b.kind === 'const') bufs.set(b.id, b.data!)
  for (const s of plan.steps) {
    switch (s.k) {
      case 'alloc':
        break
      case 'free':
        bufs.delete(s.buf)
        break
      case 'random': {
        const key = bufs.get(s.key)!
        bufs.set(s.out, random.fillUniform(key[0]!, key[1]!, new Float32Array(plan.buffers[s.out]!.size)))
        break
      }
      case 'kernel':
        bufs.set(s.kernel.out, runKernel(s.kernel, bufs))
        break
      case 'host': {
        const ins = s.ins.map((b) => ({ shape: plan.buffers[b]!.shape, dtype: plan.buffers[b]!.dtype, data: bufs.get(b)! }) as HostTensor)
        bufs.set(s.out, applyPrim(s.eqn.prim, ins, s.eqn.params as never, s.eqn.out.aval).data)
        break
      }
    }
  }
  return plan.outputs.map((b) => {
    const pb = plan.buffers[b]!
    if (pb.parts) {
      // an output written in parts: join them
      const whole = allocate(pb.dtype, pb.size)
      let at = 0
      for (const p of pb.parts) {
        const d = bufs.get(p)!
        whole.set(d as never, at)
        at += d.length
      }
      return { shape: [...pb.shape], dtype: pb.dtype, data: whole } as HostTensor
    }
    const data = bufs.get(b)!
    return { shape: [...pb.shape], dtype: pb.dtype, data: pb.kind === 'temp' ? data : data.slice() } as HostTensor
  })
}

/** Gather indices that are program inputs are checked before running, with the reference's message. */
export function checkGatherIndices(idx: ArrayLike<number>, bound: number, axis: number) {
  for (let j = 0; j < idx.length; j++) {
    const v = idx[j]!
    if (v < 0 || v >= bound)
      throw new TesseraError('runtime', 'gather', `index ${v} (at flat position ${j}) is out of range [0, ${bound}) on axis ${axis}`)
  }
}
