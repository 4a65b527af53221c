import { TesseraError } from '@tessera/core'
import type { AnyTypedArray, Eqn, Var } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import { Emitter, helperNames, kernelHelpers } from './emit.js'
import { makeLogF32 } from './fastmath.js'

/**
 * A generated loop. `rows` and `acc` are used only by kernels generated for a row-blocked chain
 * (core's RowChain): the number of rows of the leading axis in this block, and a sink's float64
 * accumulators (ACC in the source), which persist across blocks.
 */
export type Kernel = (bufs: AnyTypedArray[], rows?: number, acc?: Float64Array) => void

export interface GeneratedKernel {
  readonly source: string
  readonly fn: Kernel
}

function build(env: EmitEnv & { slotOf(v: Var): number }, body: string[], used: Set<number>): GeneratedKernel {
  const header = [...used].sort((a, b) => a - b).map((s) => `const b${s} = B[${s}];`)
  const source = [...header, ...body].join('\n')
  return { source, fn: compileKernel(source) }
}

/** A kernel function from its generated source (also how worker threads get theirs). */
export function compileKernel(source: string): Kernel {
  const factory = new Function(...helperNames, `return function kernel(B, R, ACC) {\n${source}\n}`) as (...h: unknown[]) => Kernel
  const helpers: typeof kernelHelpers = { ...kernelHelpers, LOG: makeLogF32() }
  return factory(...helperNames.map((h) => helpers[h as keyof typeof kernelHelpers]))
}

/** Records which buffer slots a kernel reads, so its header binds only those. */
export function tracking(env: EmitEnv & { slotOf(v: Var): number }): { env: EmitEnv; used: Set<number> } {
  const used = new Set<number>()
  return {
    used,
    env: {
      ...(env.facts ? { facts: env.facts } : {}),
      def: (v) => env.def(v),
      bufName: (v) => {
        const b = env.bufName(v)
        if (b !== undefined) used.add(env.slotOf(v))
        return b
      },
    },
  }
}

function loopOpen(vars: readonly string[], dims: readonly (number | string)[]): string[] {
  return vars.map((v, k) => `for (let ${v} = 0; ${v} < ${dims[k]}; ${v}++) {`)
}

/** Loop bounds of a shape; in a row-blocked kernel the leading axis runs over the block's `R` rows. */
const dimsOf = (shape: readonly number[], blocked: boolean): (number | string)[] =>
  shape.map((d, k) => (blocked && k === 0 ? 'R' : d))

/** One loop over the elements of `v` that evaluates its fused expression and stores it. */
export function elementwiseKernel(v: Var, env: EmitEnv & { slotOf(v: Var): number }, blocked = false): GeneratedKernel {
  const t = tracking(env)
  const slot = env.slotOf(v)
  t.used.add(slot)
  const shape = v.aval.shape
  const vars = shape.map((_, k) => `i${k}`)
  const em = new Emitter(t.env)
  const val = em.value(v, { axes: vars, flat: shape.length === 0 ? '0' : 'o' }, v)
  const body = [
    'let o = 0;',
    ...loopOpen(vars, dimsOf(shape, blocked)),
    ...em.lines,
    `b${slot}[o++] = ${val};`,
    ...vars.map(() => '}'),
  ]
  return build(env, body, t.used)
}

/**
 * A reduction (sum/max/min over axes, argmin/argmax over one axis) whose operand's elementwise
 * chain is evaluated inside the reduction loop, so it is never stored. Accumulation order and
 * precision are the reference's: row-major over the reduced axes, sums in float64 rounded once.
 */
export function reduceKernel(
  e: Eqn,
  env: EmitEnv & { slotOf(v: Var): number },
  sideOutputs: readonly Var[] = [],
  blocked = false,
): GeneratedKernel {
  const t = tracking(env)
  const slot = env.slotOf(e.out)
  t.used.add(slot)
  for (const v of sideOutputs) t.used.add(env.slotOf(v))
  const src = e.inputs[0]!
  const inShape = src.aval.shape
  const axes: readonly number[] =
    e.prim === 'argmin' || e.prim === 'argmax' ? [e.params.axis] : (e.params as { axes: readonly number[] }).axes
  const kept = inShape.map((_, k) => k).filter((k) => !axes.includes(k))
  const outVars = kept.map((k) => `i${k}`)
  const redVars = axes.map((k) => `r${k}`)
  const ix = inShape.map((_, k) => (axes.includes(k) ? `r${k}` : `i${k}`))
  const em = new Emitter(t.env)
  // side outputs: stored values of the operand's shape, computed and written in this same loop
  // (the planner only passes them when the reduced axes are trailing, so `f` is their flat index)
  const selves = new Set(sideOutputs.map((v) => v.id))
  const at = sideOutputs.length > 0 ? { axes: ix, flat: 'f' } : { axes: ix }
  const x = em.value(src, at, selves)
  const sideStores = sideOutputs.map((v) => `b${env.slotOf(v)}[f] = ${em.value(v, at, selves)};`)
  const isInt = src.aval.dtype === 'int32'
  // A sum over leading axes (a column sum such as softmax's mean over samples) walked row by
  // row: the reduced axes become the outer loops and one float64 accumulator per output lives in
  // a row-sized array, so the operand is read at unit stride instead of one element per cache
  // line. Each output's terms are still added in the reference's order (reduced axes ascending).
  const leading = [...axes].sort((a, b) => a - b).every((a, i) => a === i)
  if (blocked && axes.includes(0)) throw new TesseraError('backend', 'fast.loops', 'a row-blocked reduction over the leading axis is a sink')
  if (e.prim === 'reduce_sum' && leading && kept.length > 0 && sideOutputs.length === 0) {
    const keptDims = kept.map((k) => inShape[k]!)
    const n = keptDims.reduce((a, b) => a * b, 1)
    const body = [
      `const acc = new Float64Array(${n});`,
      ...loopOpen(redVars, axes.map((k) => inShape[k]!)),
      'let o = 0;',
      ...loopOpen(outVars, keptDims),
      ...em.lines,
      isInt ? `acc[o] = (acc[o] + ${x}) | 0; o++;` : `acc[o++] += ${x};`,
      ...outVars.map(() => '}'),
      ...redVars.map(() => '}'),
      `for (let o = 0; o < ${n}; o++) b${slot}[o] = acc[o];`,
    ]
    return build(env, body, t.used)
  }
  let init: string[], updateOf: (x: string) => string[], result: string
  switch (e.prim) {
    case 'reduce_sum':
      init = ['let s = 0;']
      updateOf = (x) => [isInt ? `s = (s + ${x}) | 0;` : `s += ${x};`]
      result = 's'
      break
    case 'reduce_max':
    case 'reduce_min': {
      const count = axes.reduce((p, k) => p * inShape[k]!, 1)
      if (count === 0) {
        init = ['let s = 0, c = 0;']
        updateOf = (x) => [`s = c++ === 0 ? ${x} : ${e.prim === 'reduce_max' ? 'MAX' : 'MIN'}(s, ${x});`]
      } else {
        // MAX/MIN inlined: a NaN sticks (s !== s keeps it; a NaN x fails the comparison and is
        // taken), and ties (+0 vs -0) take the newer element, as MAX(s, x) does; starting from
        // -inf/+inf gives the first element on the first step
        const cmp = e.prim === 'reduce_max' ? '>' : '<'
        init = [`let s = ${e.prim === 'reduce_max' ? '-Infinity' : 'Infinity'};`]
        updateOf = (x) => [`const v = ${x};`, `s = (s ${cmp} v || s !== s) ? s : v;`]
      }
      result = 's'
      break
    }
    case 'argmin':
    case 'argmax': {
      const r = redVars[0]!
      init = ['let best = 0, bi = -1;']
      updateOf = (x) => [
        `const v = ${x};`,
        `if (v !== v) { bi = ${r}; break; }`,
        `if (bi < 0 || v ${e.prim === 'argmin' ? '<' : '>'} best) { best = v; bi = ${r}; }`,
      ]
      result = 'bi'
      break
    }
    default:
      throw new TesseraError('backend', 'fast.loops', `${e.prim} is not a reduction`)
  }
  const step = (lines: readonly string[], stores: readonly string[], upd: readonly string[]) => [
    ...lines,
    ...stores,
    ...(sideOutputs.length > 0 ? ['f++;'] : []),
    ...upd,
  ]
  const unrolled = unrollable(e, axes, inShape, em.callsHelper) ? unroll() : undefined
  const body = [
    'let o = 0, f = 0;',
    ...loopOpen(outVars, kept.map((k) => (blocked && k === 0 ? 'R' : inShape[k]!))),
    ...init,
    ...(unrolled ?? [
      ...loopOpen(redVars, axes.map((k) => inShape[k]!)),
      ...step(em.lines, sideStores, updateOf(x)),
      ...redVars.map(() => '}'),
    ]),
    `b${slot}[o++] = ${result};`,
    ...outVars.map(() => '}'),
  ]
  return build(env, body, t.used)

  /**
   * The reduced axis written out once per index: constants indexed along it become literals
   * (FSQ's per-level scales, LFQ's bit weights) and the short loop's counter and exit branch go
   * away. Long copies' value lines (pure `const` definitions with distinct names) are
   * interleaved line by line, so independent work of neighbouring copies sits side by side for
   * the CPU (FSQ's tanh chains); short ones stay copy after copy (LFQ's 16 sign-and-weight copies
   * run slower interleaved, with 16 values live at once; bench/README.md has the measurements). Stores and updates follow in index order, one block per copy, so
   * results are the loop's, in the same order.
   */
  function unroll(): string[] {
    const r = redVars[0]!
    const d = inShape[axes[0]!]!
    const side = sideOutputs.length > 0
    const copy = (k: number, flat: string) => {
      const emk = new Emitter(t.env, `u${k}_`)
      const ixk = ix.map((a) => (a === r ? String(k) : a))
      const atk = side ? { axes: ixk, flat } : { axes: ixk }
      const xk = emk.value(src, atk, selves)
      const stores = sideOutputs.map((v) => `b${env.slotOf(v)}[${flat}] = ${emk.value(v, atk, selves)};`)
      return { lines: emk.lines, stores, update: updateOf(xk) }
    }
    const first = copy(0, 'f')
    if (first.lines.length < INTERLEAVE_MIN_LINES) {
      const out: string[] = []
      for (let k = 0; k < d; k++) {
        const c = k === 0 ? first : copy(k, 'f')
        out.push('{', ...step(c.lines, c.stores, c.update), '}')
      }
      return out
    }
    const copies = [first, ...Array.from({ length: d - 1 }, (_, j) => copy(j + 1, `f + ${j + 1}`))]
    const out: string[] = []
    const longest = Math.max(...copies.map((c) => c.lines.length))
    for (let i = 0; i < longest; i++) for (const c of copies) if (i < c.lines.length) out.push(c.lines[i]!)
    for (const c of copies) out.push('{', ...c.stores, ...c.update, '}')
    return side ? [...out, `f += ${d};`] : out
  }
}

/** Largest reduced axis written out copy by copy. */
const UNROLL_MAX = 16
/** Value lines per copy from which unrolled copies are interleaved (FSQ's have 12-17, LFQ's 5). */
const INTERLEAVE_MIN_LINES = 8

/**
 * Unroll a sum/max/min over one short axis when one copy of its body is small and calls no
 * transcendental helper (LFQ's 16-bit sign-and-index loop runs faster unrolled). V8
 * inlines helper calls only up to a cumulative bytecode budget, which a few unrolled copies of a
 * call to EXP or LOG exhaust; a call left out of line returns a boxed float64. tanh is emitted
 * as inline straight-line code (no call), so FSQ's level sum unrolls: its per-level constants
 * become literals, which the exactness rules of core's lower/exactness.ts use.
 */
function unrollable(e: Eqn, axes: readonly number[], shape: readonly number[], callsHelper: boolean): boolean {
  if (e.prim === 'argmin' || e.prim === 'argmax' || axes.length !== 1) return false
  const d = shape[axes[0]!]!
  if (d < 2 || d > UNROLL_MAX) return false
  return !callsHelper
}

/**
 * A sum over leading axes (axis 0 among them) as the sink of a row-blocked chain: each call adds
 * one block of rows into `acc` (one float64 per output, zeroed by the caller before the first
 * block), walking rows outermost as the unblocked column sum does, so every output's terms are
 * added in the reference's order across blocks too. The caller stores `acc` once at the end.
 */
export function sinkKernel(e: Eqn, env: EmitEnv & { slotOf(v: Var): number }): GeneratedKernel {
  if (e.prim !== 'reduce_sum') throw new TesseraError('backend', 'fast.loops', `${e.prim} cannot be a row-blocked sink`)
  const t = tracking(env)
  const src = e.inputs[0]!
  const inShape = src.aval.shape
  const axes = [...e.params.axes].sort((a, b) => a - b)
  if (!axes.every((a, i) => a === i)) throw new TesseraError('backend', 'fast.loops', 'a sink sums over leading axes')
  const kept = inShape.map((_, k) => k).filter((k) => !axes.includes(k))
  const redVars = axes.map((k) => `r${k}`)
  const outVars = kept.map((k) => `i${k}`)
  const ix = inShape.map((_, k) => (axes.includes(k) ? `r${k}` : `i${k}`))
  const em = new Emitter(t.env)
  const x = em.value(src, { axes: ix })
  const body = [
    ...loopOpen(redVars, axes.map((k) => (k === 0 ? 'R' : inShape[k]!))),
    'let o = 0;',
    ...loopOpen(outVars, kept.map((k) => inShape[k]!)),
    ...em.lines,
    src.aval.dtype === 'int32' ? `ACC[o] = (ACC[o] + ${x}) | 0; o++;` : `ACC[o++] += ${x};`,
    ...outVars.map(() => '}'),
    ...redVars.map(() => '}'),
  ]
  return build(env, body, t.used)
}

