import type { AnyTypedArray, Eqn, LoopStep, Prim, ScheduleStep, Var } from '@tessera/core'
import type { GeneratedKernel, Kernel } from './loops.js'
import { elementwiseTree } from './wasm/elementwise.js'
import type { ReduceScan } from './wasm/reduce-scan.js'
import { MAX_COLS } from './wasm/reduce-scan.js'
import { sumKernel } from './wasm/reduce-sum.js'

/**
 * Kernels for whole-array scans a training step repeats every call, where the generic generated
 * loop is several times slower than a loop written for the case (bench/README.md, the
 * training step's scans): column sums of a stored matrix (bias gradients), the finite-value probe's
 * reductions and masks, concatenation along the leading axis, argmin of a stored vector, the sum
 * of every element of an elementwise expression (a loss). Each gives the generic loop's results
 * bit for bit.
 */
export interface ScanStep {
  readonly out: number
  readonly kernel: GeneratedKernel
  readonly prim: Prim
}

export interface ScanEnv {
  readonly def: (v: Var) => Eqn | undefined
  readonly isStored: (v: Var) => boolean
  readonly slotOf: (v: Var) => number
}

const F32_MAX = 3.4028234663852886e38
/** Elements from which a whole-array sum or column sums run in WebAssembly (below, the generated loop is as fast). */
const SUM_MIN = 1 << 12
const sizeOf = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1)

/** `fn` as a kernel with a source that says what it is (only generated loops are rebuilt from source). */
const kernelOf = (what: string, fn: Kernel): GeneratedKernel => ({ source: `/* ${what} */`, fn })

/**
 * The stored float32 x when `v` is `cast(|x| <= F32_MAX, float32)` read elementwise (through
 * reshapes): 1 where x is finite, 0 for ±Inf and NaN (|NaN| <= c is false).
 */
export function finiteMaskSource(v: Var, env: ScanEnv): Var | undefined {
  let u = v
  for (let d = env.def(u); d?.prim === 'reshape' && !env.isStored(d.inputs[0]!); d = env.def(u)) u = d.inputs[0]!
  const cast = env.def(u)
  if (cast?.prim !== 'cast' || u.aval.dtype !== 'float32') return undefined
  const le = env.def(cast.inputs[0]!)
  if (le?.prim !== 'le') return undefined
  const ab = env.def(le.inputs[0]!)
  if (ab?.prim !== 'abs') return undefined
  const x = ab.inputs[0]!
  if (x.aval.dtype !== 'float32' || !env.isStored(x) || sizeOf(x.aval.shape) !== sizeOf(v.aval.shape)) return undefined
  // the bound: a scalar F32_MAX, maybe broadcast (any larger finite bound would pass the same values, none is a float32)
  let r = le.inputs[1]!
  for (let d = env.def(r); d?.prim === 'broadcast' || d?.prim === 'reshape'; d = env.def(r)) r = d.inputs[0]!
  const full = env.def(r)
  if (sizeOf(r.aval.shape) !== 1 || full?.prim !== 'full' || (full.params as { value: number }).value !== F32_MAX) return undefined
  return x
}

/**
 * A scan kernel for a top-level step of core's schedule, or undefined where none applies.
 * `scans` gives the WebAssembly scans (undefined: the finite probe and argmin keep their loops).
 */
export function scanStep(st: LoopStep, env: ScanEnv, scans: (() => ReduceScan) | undefined): ScanStep | undefined {
  if (st.kind === 'loop') {
    if (!scans) return undefined
    // the finiteness mask of a stored array, stored
    const x = finiteMaskSource(st.out, env)
    if (!x || sizeOf(x.aval.shape) === 0) return undefined
    const sx = env.slotOf(x), so = env.slotOf(st.out)
    return { out: so, prim: env.def(st.out)!.prim, kernel: kernelOf('finite flags', (B) => scans().flags(B[sx] as Float32Array, B[so] as Float32Array)) }
  }
  if (st.kind === 'host' && st.eqn.prim === 'concat') return concatStep(st.eqn, env)
  if (st.kind !== 'reduce' || st.sides.length > 0) return undefined
  const e = st.eqn
  const src = e.inputs[0]!
  const shape = src.aval.shape
  const so = env.slotOf(e.out)
  if (e.prim === 'reduce_min') {
    if (!scans) return undefined
    // min over every element of a finiteness mask: 1 when all are finite, else 0 (never NaN)
    const axes = (e.params as { axes: readonly number[] }).axes
    const x = finiteMaskSource(src, env)
    if (!x || axes.length !== shape.length || sizeOf(shape) === 0) return undefined
    const sx = env.slotOf(x)
    return { out: so, prim: e.prim, kernel: kernelOf('all finite', (B) => void ((B[so] as Float32Array)[0] = scans().allFinite(B[sx] as Float32Array))) }
  }
  if (e.prim === 'reduce_sum' && scans && src.aval.dtype === 'float32') {
    // a sum of every element of an elementwise expression (a loss) in WebAssembly, from 4096 elements
    const axes = (e.params as { axes: readonly number[] }).axes
    const n = sizeOf(shape)
    const whole = axes.length === shape.length && n >= SUM_MIN
    const expr = !whole ? undefined
      : env.isStored(src) ? ({ kind: 'read', slot: env.slotOf(src), type: 'f32' } as const)
      : elementwiseTree(src, env.def, (v) => (env.isStored(v) ? env.slotOf(v) : undefined))
    const sum = expr && sumKernel(expr, n)
    if (sum) return { out: so, prim: e.prim, kernel: kernelOf('sum of an elementwise expression', (B) => void ((B[so] as Float32Array)[0] = sum(B))) }
  }
  if (!env.isStored(src) || src.aval.dtype !== 'float32') return undefined
  if (e.prim === 'reduce_sum') {
    const axes = [...(e.params as { axes: readonly number[] }).axes].sort((a, b) => a - b)
    if (axes.length === 0 || axes.length === shape.length || !axes.every((a, i) => a === i)) return undefined
    const rows = sizeOf(shape.slice(0, axes.length)), cols = sizeOf(shape.slice(axes.length))
    const ss = env.slotOf(src)
    // large ones in WebAssembly: the generated loop starts interpreted, and a first call pays that in full
    if (scans && rows * cols >= SUM_MIN && cols <= MAX_COLS)
      return { out: so, prim: e.prim, kernel: kernelOf(`column sums ${rows}x${cols}`, (B) => scans().columnSums(B[ss] as Float32Array, rows, cols, B[so] as Float32Array)) }
    const f = columnSums(rows, cols)
    return { out: so, prim: e.prim, kernel: kernelOf(`column sums ${rows}x${cols}`, (B) => f(B[ss] as Float32Array, B[so] as Float32Array)) }
  }
  if (e.prim === 'argmin' && shape.length === 1 && shape[0]! > 0 && scans) {
    const ss = env.slotOf(src)
    return { out: so, prim: e.prim, kernel: kernelOf('argmin of a vector', (B) => void ((B[so] as Int32Array)[0] = scans().argmin(B[ss] as Float32Array))) }
  }
  return undefined
}

/**
 * Sums over the leading rows of a (rows x cols) matrix: eight columns at a time in float64
 * locals, each adding its rows in order from +0 and rounded once (the reference's sum), read
 * down the column (the matrix stays in cache: rows of a bias gradient are a batch).
 */
function columnSums(rows: number, cols: number): (a: Float32Array, out: Float32Array) => void {
  const n = rows * cols
  const s = [0, 1, 2, 3, 4, 5, 6, 7]
  const src = [
    'let j = 0;',
    `for (; j + 7 < ${cols}; j += 8) {`,
    `let ${s.map((u) => `s${u} = 0`).join(', ')};`,
    `for (let p = j; p < ${n}; p += ${cols}) { ${s.map((u) => `s${u} += a[p + ${u}];`).join(' ')} }`,
    s.map((u) => `out[j + ${u}] = s${u};`).join(' '),
    '}',
    `for (; j < ${cols}; j++) { let t = 0; for (let p = j; p < ${n}; p += ${cols}) t += a[p]; out[j] = t; }`,
  ].join('\n')
  return new Function('a', 'out', src) as (a: Float32Array, out: Float32Array) => void
}

/** A concat along an axis with nothing before it: the parts one after another. */
function concatStep(e: Eqn, env: ScanEnv): ScanStep | undefined {
  const axis = (e.params as { axis: number }).axis
  const dt = e.out.aval.dtype
  if (sizeOf(e.out.aval.shape.slice(0, axis)) !== 1 || (dt !== 'float32' && dt !== 'int32') || e.inputs.some((v) => v.aval.dtype !== dt)) return undefined
  const parts = e.inputs.map((v) => ({ slot: env.slotOf(v), at: 0, n: sizeOf(v.aval.shape) }))
  let at = 0
  for (const p of parts) {
    p.at = at
    at += p.n
  }
  const so = env.slotOf(e.out)
  return {
    out: so, prim: e.prim,
    kernel: kernelOf('concat', (B: AnyTypedArray[]) => {
      const out = B[so] as Float32Array | Int32Array
      for (const p of parts) out.set(B[p.slot] as Float32Array & Int32Array, p.at)
    }),
  }
}

/**
 * The finite probe's `argmin(concat(mask(x), flags...))` folded into one kernel: the reference's
 * argmin walks the concatenation in order, and a mask part (values 0 and 1, never NaN) can only
 * contribute its first least element, so it is read as "all finite" (1 at its first position)
 * or "first non-finite" (0 there) by one scan of x, without the mask or the concatenation ever
 * being stored. Other parts are read element by element. The masks and concats read only here
 * are dropped from the plan.
 */
export interface ProbeFolds {
  /** The folded argmin of a top-level step, if it is one. */
  step(st: LoopStep): ScanStep | undefined
  /** Whether a step only stored a mask or concat the folded argmin reads through. */
  dropped(st: ScheduleStep): boolean
}

/** The folds of a plan with no finite probe to fold (no argmin, or no WebAssembly). */
export const NO_FOLDS: ProbeFolds = { step: () => undefined, dropped: () => false }

type Part = { readonly mask: number; readonly n: number } | { readonly slot: number }

export function probeFolds(
  steps: readonly ScheduleStep[],
  env: ScanEnv & { readonly uses: (v: Var) => number; readonly isOutput: (v: Var) => boolean },
  scans: () => ReduceScan,
): ProbeFolds {
  const folded = new Map<Eqn, ScanStep>()
  const drop = new Set<number>()
  for (const st of steps) {
    if (st.kind !== 'reduce' || st.eqn.prim !== 'argmin' || st.sides.length > 0) continue
    const e = st.eqn
    const root = e.inputs[0]!
    if (root.aval.shape.length !== 1 || root.aval.dtype !== 'float32' || env.def(root)?.prim !== 'concat') continue
    // the concatenation's leaves, in order, through concats read only by their parent
    const parts: Part[] = []
    const through: Var[] = []
    let ok = true
    const walk = (v: Var, top: boolean) => {
      const d = env.def(v)
      if (d?.prim === 'concat' && (top || (env.uses(v) === 1 && !env.isOutput(v)))) {
        through.push(v)
        d.inputs.forEach((u) => walk(u, false))
        return
      }
      if (v.aval.dtype !== 'float32' || v.aval.shape.length !== 1) ok = false
      const x = finiteMaskSource(v, env)
      if (x && env.uses(v) === 1 && !env.isOutput(v) && sizeOf(x.aval.shape) > 0) {
        through.push(v)
        parts.push({ mask: env.slotOf(x), n: sizeOf(x.aval.shape) })
      } else if (env.isStored(v)) parts.push({ slot: env.slotOf(v) })
      else ok = false
    }
    walk(root, env.uses(root) === 1 && !env.isOutput(root))
    if (!ok || !parts.some((p) => 'mask' in p) || through[0] !== root) continue
    const so = env.slotOf(e.out)
    folded.set(e, { out: so, prim: e.prim, kernel: kernelOf('finite probe argmin', (B) => void ((B[so] as Int32Array)[0] = foldedArgmin(B, parts, scans()))) })
    for (const v of through) drop.add(v.id)
  }
  return {
    step: (st) => (st.kind === 'reduce' ? folded.get(st.eqn) : undefined),
    dropped: (st) => (st.kind === 'loop' ? drop.has(st.out.id) : st.kind === 'host' ? drop.has(st.eqn.out.id) : false),
  }
}

/** The reference's argmin over the parts in order (first NaN, else first least element). */
function foldedArgmin(B: readonly AnyTypedArray[], parts: readonly Part[], sc: ReduceScan): number {
  let best = 0, bi = -1, off = 0
  for (const p of parts) {
    if ('mask' in p) {
      const x = B[p.mask] as Float32Array
      // the part's least value and its first position
      let v = 1, at = 0
      if (sc.allFinite(x) === 0) {
        const flags = new Float32Array(p.n)
        sc.flags(x, flags)
        v = 0
        at = flags.indexOf(0)
      }
      if (bi < 0 || v < best) ((best = v), (bi = off + at))
      off += p.n
      continue
    }
    const a = B[p.slot] as Float32Array
    for (let i = 0; i < a.length; i++) {
      const v = a[i]!
      if (v !== v) return off + i
      if (bi < 0 || v < best) ((best = v), (bi = off + i))
    }
    off += a.length
  }
  return bi
}

