import type { AnyTypedArray, Eqn, EqnOf, Var } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import { Emitter, helperNames, kernelHelpers } from './emit.js'
import { Code, V128, I32, assemble } from './wasm/asm.js'

/**
 * The nearest-code pattern: `argmin_j f(dot(a_i, b_:j), row terms_i, column terms_j)` over the
 * last axis, where `dot` is a rank-2 matmul used nowhere else and f is a chain of float32
 * add/sub/mul/div/max/min/neg/abs/sqrt. Distances are computed tile by tile in a WebAssembly
 * SIMD kernel and reduced to an argmin in registers, so the m x n distance matrix is never
 * stored. Row and column terms (for example |x|^2 and |c|^2) are any subexpressions that depend
 * on only one of the two axes; they are evaluated by generated JS loops first.
 *
 * Numerics: every epilogue op is a float32 op, as in the reference; the dot products accumulate
 * in float32 (the reference accumulates in float64), so indices can differ from the reference
 * only between candidates whose distances agree to float32 rounding of a k-term sum. NaN
 * distances are tracked per lane so that a NaN wins at its first index, as in the reference.
 */

type Epi =
  | { readonly op: 'dot' }
  | { readonly op: 'term'; readonly k: number }
  | { readonly op: 'neg' | 'abs' | 'sqrt'; readonly a: Epi }
  | { readonly op: 'add' | 'sub' | 'mul' | 'div' | 'max' | 'min'; readonly a: Epi; readonly b: Epi }

interface Term {
  readonly v: Var
  /** 'row': depends on i only; 'col': on j only (or on neither). */
  readonly dep: 'row' | 'col'
}

export interface MatchCtx {
  def(v: Var): Eqn | undefined
  stored(v: Var): boolean
  uses(v: Var): readonly Eqn[]
  isOutput(v: Var): boolean
}

const UNARY = new Set(['neg', 'abs', 'sqrt'])
const BINARY = new Set(['add', 'sub', 'mul', 'div', 'max', 'min'])

/** Rows per register tile, 4-lane vectors per tile (columns = 4 * V). */
const R = 4
const V = 2
const CW = 4 * V
/** Rows copied into wasm memory per call: bounds the memory the kernel needs. */
const CHUNK = 256

export function matchNearest(e: EqnOf<'argmin'>, ctx: MatchCtx): NearestStep | undefined {
  const x = e.inputs[0]!
  if (x.aval.shape.length !== 2 || e.params.axis !== 1 || x.aval.dtype !== 'float32') return undefined
  let matmul: Eqn | undefined
  const terms: Term[] = []
  const containsDot = (v: Var, seen = new Set<number>()): boolean => {
    if (seen.has(v.id)) return false
    seen.add(v.id)
    const d = ctx.def(v)
    if (!d) return false
    if (d.prim === 'matmul') return true
    if (ctx.stored(v)) return false
    return d.inputs.some((u) => containsDot(u, seen))
  }
  const walk = (v: Var): Epi | undefined => {
    const d = ctx.def(v)
    if (d && d.prim === 'matmul') {
      if (matmul && matmul !== d) return undefined
      if (ctx.uses(v).length !== 1 || ctx.isOutput(v) || v.aval.shape.length !== 2) return undefined
      matmul = d
      return { op: 'dot' }
    }
    if (!containsDot(v)) {
      const dep = termDependency(v, ctx)
      if (dep === undefined) return undefined
      terms.push({ v, dep })
      return { op: 'term', k: terms.length - 1 }
    }
    if (!d || ctx.stored(v) || d.inputs.some((u) => u.aval.dtype !== 'float32')) return undefined
    if (UNARY.has(d.prim)) {
      const a = walk(d.inputs[0]!)
      return a && ({ op: d.prim, a } as Epi)
    }
    if (BINARY.has(d.prim)) {
      const a = walk(d.inputs[0]!)
      const b = a && walk(d.inputs[1]!)
      return b && ({ op: d.prim, a: a!, b } as Epi)
    }
    return undefined
  }
  const epi = walk(x)
  if (!epi || !matmul) return undefined
  return new NearestStep(e, matmul as EqnOf<'matmul'>, epi, terms)
}

/** Which of the two axes a subexpression reads: found from its index arithmetic. */
function termDependency(v: Var, ctx: MatchCtx): 'row' | 'col' | undefined {
  const em = new Emitter({ def: ctx.def, bufName: (u) => (ctx.stored(u) ? 'buf' : undefined) }, 't', true)
  let src: string
  try {
    src = em.value(v, { axes: ['I', 'J'] })
  } catch {
    return undefined
  }
  const usesI = /\bI\b/.test(src), usesJ = /\bJ\b/.test(src)
  if (usesI && usesJ) return undefined
  return usesI ? 'row' : 'col'
}

type TermKernel = (B: AnyTypedArray[], dst: Float32Array, dstOff: number, from: number, count: number) => void

function termKernel(v: Var, dep: 'row' | 'col', env: EmitEnv & { slotOf(v: Var): number }): TermKernel {
  const used = new Set<number>()
  const em = new Emitter({
    def: env.def,
    bufName: (u) => {
      const b = env.bufName(u)
      if (b !== undefined) used.add(env.slotOf(u))
      return b
    },
  })
  const val = em.value(v, { axes: dep === 'row' ? ['q', '0'] : ['0', 'q'] })
  const src = [
    ...[...used].map((s) => `const b${s} = B[${s}];`),
    'for (let q = from; q < from + count; q++) {',
    ...em.lines,
    `dst[dstOff + q - from] = ${val};`,
    '}',
  ].join('\n')
  const f = new Function(...helperNames, `return function term(B, dst, dstOff, from, count) {\n${src}\n}`)
  return f(...helperNames.map((h) => kernelHelpers[h as keyof typeof kernelHelpers])) as TermKernel
}

export class NearestStep {
  readonly m: number
  readonly n: number
  readonly k: number
  private readonly npad: number
  private readonly rowTerms: number[]
  private readonly colTerms: number[]
  private termKernels: TermKernel[] = []
  private slots: { a: number; b: number } | undefined
  private instance: { memory: WebAssembly.Memory; run: (rows: number) => void } | undefined
  private readonly layout: { col: number; a: number; row: number; out: number; bytes: number }

  constructor(
    readonly argmin: EqnOf<'argmin'>,
    readonly matmul: EqnOf<'matmul'>,
    private readonly epi: Epi,
    private readonly terms: readonly Term[],
  ) {
    const [m, n] = argmin.inputs[0]!.aval.shape as [number, number]
    this.m = m
    this.n = n
    this.k = matmul.inputs[0]!.aval.shape[1]!
    this.npad = Math.ceil(n / CW) * CW
    this.rowTerms = terms.flatMap((t, i) => (t.dep === 'row' ? [i] : []))
    this.colTerms = terms.flatMap((t, i) => (t.dep === 'col' ? [i] : []))
    const bBytes = this.k * this.npad * 4
    const col = bBytes
    const a = col + this.colTerms.length * this.npad * 4
    const row = a + CHUNK * this.k * 4
    const out = row + this.rowTerms.length * CHUNK * 4
    this.layout = { col, a, row, out, bytes: out + CHUNK * 3 * CW * 4 }
  }

  /** Build the term loops once slots and buffer names are known. */
  prepare(env: EmitEnv & { slotOf(v: Var): number }): void {
    this.slots = { a: env.slotOf(this.matmul.inputs[0]!), b: env.slotOf(this.matmul.inputs[1]!) }
    this.termKernels = this.terms.map((t) => termKernel(t.v, t.dep, env))
  }

  private module(): { memory: WebAssembly.Memory; run: (rows: number) => void } {
    if (this.instance) return this.instance
    const bytes = assemble(Math.ceil(this.layout.bytes / 65536), [{ name: 'run', code: this.kernelCode() }])
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes as BufferSource), {})
    const ex = inst.exports as unknown as { memory: WebAssembly.Memory; run: (rows: number) => void }
    this.instance = { memory: ex.memory, run: ex.run }
    return this.instance
  }

  /** The SIMD kernel: for each block of R rows, all column chunks, then per-lane argmin state out. */
  private kernelCode(): Code {
    const { k, npad, n } = this
    const L = this.layout
    const c = new Code(1)
    const rows = 0
    const i = c.local(I32) // row index of the block
    const aPtr = c.local(I32) // byte address of the block's first A row
    const col = c.local(I32) // byte offset of the column chunk
    const jv = c.local(V128)
    const bv = Array.from({ length: V }, () => c.local(V128))
    const s = c.local(V128)
    const tmp = c.local(V128)
    const acc = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
    const best = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
    const bidx = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
    const nanIdx = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
    const rowVals = this.rowTerms.map(() => Array.from({ length: R }, () => c.local(V128)))
    const INT_MAX = 0x7fffffff
    const mask = n % CW !== 0

    c.i32(0).set(i)
    c.i32(L.a).set(aPtr)
    c.block().loop()
    // row terms of this block, splatted once
    this.rowTerms.forEach((_, t) => {
      for (let r = 0; r < R; r++) c.get(i).i32(4).i32Mul().vLoad32Splat(L.row + t * CHUNK * 4 + r * 4).set(rowVals[t]![r]!)
    })
    for (let r = 0; r < R; r++)
      for (let v = 0; v < V; v++) {
        c.vConstF32([Infinity, Infinity, Infinity, Infinity]).set(best[r]![v]!)
        c.vConstI32([0, 0, 0, 0]).set(bidx[r]![v]!)
        c.vConstI32([INT_MAX, INT_MAX, INT_MAX, INT_MAX]).set(nanIdx[r]![v]!)
      }
    c.vConstI32([0, 1, 2, 3]).set(jv)
    c.i32(0).set(col)
    c.loop()
    for (let r = 0; r < R; r++) for (let v = 0; v < V; v++) c.vConstF32([0, 0, 0, 0]).set(acc[r]![v]!)
    for (let d = 0; d < k; d++) {
      for (let v = 0; v < V; v++) c.get(col).vLoad(d * npad * 4 + v * 16).set(bv[v]!)
      for (let r = 0; r < R; r++) {
        c.get(aPtr).vLoad32Splat((r * k + d) * 4).set(s)
        for (let v = 0; v < V; v++) c.get(acc[r]![v]!).get(s).get(bv[v]!).f32x4Mul().f32x4Add().set(acc[r]![v]!)
      }
    }
    for (let r = 0; r < R; r++)
      for (let v = 0; v < V; v++) {
        const emit = (x: Epi): void => {
          switch (x.op) {
            case 'dot': c.get(acc[r]![v]!); return
            case 'term': {
              const ri = this.rowTerms.indexOf(x.k)
              if (ri >= 0) c.get(rowVals[ri]![r]!)
              else c.get(col).vLoad(L.col + this.colTerms.indexOf(x.k) * npad * 4 + v * 16)
              return
            }
            case 'neg': emit(x.a); c.f32x4Neg(); return
            case 'abs': emit(x.a); c.f32x4Abs(); return
            case 'sqrt': emit(x.a); c.f32x4Sqrt(); return
            default:
              emit(x.a)
              emit(x.b)
              if (x.op === 'add') c.f32x4Add()
              else if (x.op === 'sub') c.f32x4Sub()
              else if (x.op === 'mul') c.f32x4Mul()
              else if (x.op === 'div') c.f32x4Div()
              else if (x.op === 'max') c.f32x4Max()
              else c.f32x4Min()
          }
        }
        emit(this.epi)
        c.set(tmp)
        // this vector's column indices
        c.get(jv).vConstI32([v * 4, v * 4, v * 4, v * 4]).i32x4Add().set(s)
        if (mask) {
          // padding columns (j >= n) become +Inf: they never win and never count as NaN
          c.get(tmp).vConstF32([Infinity, Infinity, Infinity, Infinity])
          c.get(s).vConstI32([n, n, n, n]).i32x4LtS().bitselect().set(tmp)
        }
        // first NaN per lane
        c.get(nanIdx[r]![v]!)
        c.get(s).vConstI32([INT_MAX, INT_MAX, INT_MAX, INT_MAX]).get(tmp).get(tmp).f32x4Ne().bitselect()
        c.i32x4MinS().set(nanIdx[r]![v]!)
        // strict less keeps the first index per lane
        c.get(tmp).get(best[r]![v]!).f32x4Lt().set(bv[0]!)
        c.get(tmp).get(best[r]![v]!).get(bv[0]!).bitselect().set(best[r]![v]!)
        c.get(s).get(bidx[r]![v]!).get(bv[0]!).bitselect().set(bidx[r]![v]!)
      }
    c.get(jv).vConstI32([CW, CW, CW, CW]).i32x4Add().set(jv)
    c.get(col).i32(CW * 4).i32Add().tee(col).i32(npad * 4).i32LtU().brIf(0)
    c.end() // column loop
    // per-lane state out: [best CW floats][bidx CW ints][nanIdx CW ints] per row
    for (let r = 0; r < R; r++) {
      for (let v = 0; v < V; v++) {
        const base = L.out + r * 3 * CW * 4 + v * 16
        c.get(i).i32(3 * CW * 4).i32Mul().get(best[r]![v]!).vStore(base)
        c.get(i).i32(3 * CW * 4).i32Mul().get(bidx[r]![v]!).vStore(base + CW * 4)
        c.get(i).i32(3 * CW * 4).i32Mul().get(nanIdx[r]![v]!).vStore(base + 2 * CW * 4)
      }
    }
    c.get(aPtr).i32(R * k * 4).i32Add().set(aPtr)
    c.get(i).i32(R).i32Add().tee(i).get(rows).i32LtU().brIf(0)
    c.end().end() // row loop, block
    return c
  }

  run(B: AnyTypedArray[], out: Int32Array): void {
    const { m, n, k, npad } = this
    const L = this.layout
    const { memory, run } = this.module()
    const f32 = new Float32Array(memory.buffer)
    const i32 = new Int32Array(memory.buffer)
    const b = B[this.slots!.b] as Float32Array
    for (let d = 0; d < k; d++) f32.set(b.subarray(d * n, d * n + n), d * npad)
    this.colTerms.forEach((t, ci) => this.termKernels[t]!(B, f32, L.col / 4 + ci * npad, 0, n))
    const a = B[this.slots!.a] as Float32Array
    const outBase = L.out / 4
    for (let r0 = 0; r0 < m; r0 += CHUNK) {
      const cnt = Math.min(CHUNK, m - r0)
      const padded = Math.ceil(cnt / R) * R
      f32.set(a.subarray(r0 * k, (r0 + cnt) * k), L.a / 4)
      if (padded > cnt) f32.fill(0, L.a / 4 + cnt * k, L.a / 4 + padded * k)
      this.rowTerms.forEach((t, ri) => this.termKernels[t]!(B, f32, L.row / 4 + ri * CHUNK, r0, cnt))
      run(padded)
      for (let q = 0; q < cnt; q++) {
        const base = outBase + q * 3 * CW
        let nanAt = 0x7fffffff
        for (let l = 0; l < CW; l++) nanAt = Math.min(nanAt, i32[base + 2 * CW + l]!)
        if (nanAt !== 0x7fffffff) {
          out[r0 + q] = nanAt
          continue
        }
        let bv = f32[base]!, bi = i32[base + CW]!
        for (let l = 1; l < CW; l++) {
          const v = f32[base + l]!, j = i32[base + CW + l]!
          if (v < bv || (v === bv && j < bi)) {
            bv = v
            bi = j
          }
        }
        out[r0 + q] = bi
      }
    }
  }
}
