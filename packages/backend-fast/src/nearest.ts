import type { AnyTypedArray, Eqn, EqnOf, Var } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import { Emitter, helperNames, kernelHelpers } from './emit.js'
import { Code, V128, I32, assemble } from './wasm/asm.js'
import { KernelThreads } from './wasm/threads.js'

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
const R = 2
const V = 4
const CW = 4 * V
/** Rows copied into wasm memory per call: bounds the memory the kernel needs. */
const CHUNK = 512
/** Below this many multiply-adds a run stays on the calling thread. */
const THREAD_MIN_WORK = 1 << 22

export function matchNearest(e: EqnOf<'argmin'>, ctx: MatchCtx, threads: number): NearestStep | undefined {
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
  return new NearestStep(e, matmul as EqnOf<'matmul'>, epi, terms, threads)
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
  private instance: { memory: WebAssembly.Memory; run: (...a: number[]) => void; threads?: KernelThreads } | undefined
  /** Bytes: shared B and column terms, then per thread an A chunk, row terms and lane results. */
  private readonly layout: { col: number; perThread: number; a: number; row: number; out: number; base: number }

  constructor(
    readonly argmin: EqnOf<'argmin'>,
    readonly matmul: EqnOf<'matmul'>,
    private readonly epi: Epi,
    private readonly terms: readonly Term[],
    private readonly threads: number,
  ) {
    const [m, n] = argmin.inputs[0]!.aval.shape as [number, number]
    this.m = m
    this.n = n
    this.k = matmul.inputs[0]!.aval.shape[1]!
    this.npad = Math.ceil(n / CW) * CW
    this.rowTerms = terms.flatMap((t, i) => (t.dep === 'row' ? [i] : []))
    this.colTerms = terms.flatMap((t, i) => (t.dep === 'col' ? [i] : []))
    const col = this.k * this.npad * 4
    const base = col + this.colTerms.length * this.npad * 4
    const a = 0
    const row = CHUNK * this.k * 4
    const out = row + this.rowTerms.length * CHUNK * 4
    const perThread = out + CHUNK * 3 * CW * 4
    this.layout = { col, perThread, a, row, out, base }
  }

  /** Threads worth using for this size (the caller's thread counts as one). */
  private threadCount(): number {
    return this.m * this.n * this.k >= THREAD_MIN_WORK ? Math.max(1, Math.min(this.threads, Math.ceil(this.m / CHUNK))) : 1
  }

  /** Build the term loops once slots and buffer names are known. */
  prepare(env: EmitEnv & { slotOf(v: Var): number }): void {
    this.slots = { a: env.slotOf(this.matmul.inputs[0]!), b: env.slotOf(this.matmul.inputs[1]!) }
    this.termKernels = this.terms.map((t) => termKernel(t.v, t.dep, env))
  }

  private module(): { memory: WebAssembly.Memory; run: (...a: number[]) => void; threads?: KernelThreads } {
    if (this.instance) return this.instance
    const T = this.threadCount()
    const pages = Math.ceil((this.layout.base + T * this.layout.perThread) / 65536)
    const module = new WebAssembly.Module(assemble(pages, [{ name: 'run', code: this.kernelCode() }]) as BufferSource)
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    const inst = new WebAssembly.Instance(module, { env: { memory } })
    const run = (inst.exports as unknown as { run: (...a: number[]) => void }).run
    this.instance = { memory, run, ...(T > 1 ? { threads: new KernelThreads(module, memory, T - 1) } : {}) }
    return this.instance
  }

  dispose(): void {
    this.instance?.threads?.dispose()
    this.instance = undefined
  }

  /** The SIMD kernel: for each block of R rows, all column chunks, then per-lane argmin state out. */
  private kernelCode(): Code {
    const { k, npad, n } = this
    const L = this.layout
    const c = new Code(4)
    const [rows, aPtr, rowPtr, outPtr] = [0, 1, 2, 3] // byte addresses of this thread's A rows, row terms, lane results
    const i = c.local(I32) // row index of the block
    const col = c.local(I32) // byte offset of the column chunk within a row of column terms
    const bp = c.local(I32) // byte address of the column chunk's packed B panel [k][CW]
    const jv = c.local(V128)
    const bv = Array.from({ length: V }, () => c.local(V128))
    const s = c.local(V128)
    const tmp = c.local(V128)
    const acc = Array.from({ length: R }, () => Array.from({ length: V }, () => c.local(V128)))
    // per-lane argmin state lives in the output area (not in locals): fewer live vectors across
    // the dot loop, which TurboFan otherwise spills badly
    const stAt = (r: number, v: number, which: 0 | 1 | 2) => r * 3 * CW * 4 + which * CW * 4 + v * 16
    const m = c.local(V128)
    const rowVals = this.rowTerms.map(() => Array.from({ length: R }, () => c.local(V128)))
    const INT_MAX = 0x7fffffff
    const mask = n % CW !== 0

    c.i32(0).set(i)
    c.block().loop()
    // row terms of this block, splatted once
    this.rowTerms.forEach((_, t) => {
      for (let r = 0; r < R; r++) c.get(rowPtr).vLoad32Splat(t * CHUNK * 4 + r * 4).set(rowVals[t]![r]!)
    })
    for (let r = 0; r < R; r++)
      for (let v = 0; v < V; v++) {
        c.get(outPtr).vConstF32([Infinity, Infinity, Infinity, Infinity]).vStore(stAt(r, v, 0))
        c.get(outPtr).vConstI32([0, 0, 0, 0]).vStore(stAt(r, v, 1))
        c.get(outPtr).vConstI32([INT_MAX, INT_MAX, INT_MAX, INT_MAX]).vStore(stAt(r, v, 2))
      }
    c.vConstI32([0, 1, 2, 3]).set(jv)
    c.i32(0).set(col)
    c.i32(0).set(bp)
    c.loop()
    for (let r = 0; r < R; r++) for (let v = 0; v < V; v++) c.vConstF32([0, 0, 0, 0]).set(acc[r]![v]!)
    // the dot loop: UNROLL steps of d per iteration, pointers advanced per iteration (a fully
    // unrolled body was slower under TurboFan than under Liftoff)
    const U = k % 4 === 0 ? 4 : k % 2 === 0 ? 2 : 1
    const da = c.local(I32), db = c.local(I32), dEnd = c.local(I32)
    c.get(aPtr).set(da)
    c.get(bp).set(db)
    c.get(aPtr).i32(k * 4).i32Add().set(dEnd)
    c.loop()
    for (let u = 0; u < U; u++) {
      for (let v = 0; v < V; v++) c.get(db).vLoad(u * CW * 4 + v * 16).set(bv[v]!)
      for (let r = 0; r < R; r++) {
        c.get(da).vLoad32Splat((r * k + u) * 4).set(s)
        for (let v = 0; v < V; v++) c.get(acc[r]![v]!).get(s).get(bv[v]!).f32x4Mul().f32x4Add().set(acc[r]![v]!)
      }
    }
    c.get(db).i32(U * CW * 4).i32Add().set(db)
    c.get(da).i32(U * 4).i32Add().tee(da).get(dEnd).i32LtU().brIf(0)
    c.end()
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
        c.get(outPtr)
        c.get(outPtr).vLoad(stAt(r, v, 2))
        c.get(s).vConstI32([INT_MAX, INT_MAX, INT_MAX, INT_MAX]).get(tmp).get(tmp).f32x4Ne().bitselect()
        c.i32x4MinS().vStore(stAt(r, v, 2))
        // strict less keeps the first index per lane
        c.get(outPtr).vLoad(stAt(r, v, 0)).set(bv[1 % V]!)
        c.get(tmp).get(bv[1 % V]!).f32x4Lt().set(m)
        c.get(outPtr).get(tmp).get(bv[1 % V]!).get(m).bitselect().vStore(stAt(r, v, 0))
        c.get(outPtr).get(s).get(outPtr).vLoad(stAt(r, v, 1)).get(m).bitselect().vStore(stAt(r, v, 1))
      }
    c.get(jv).vConstI32([CW, CW, CW, CW]).i32x4Add().set(jv)
    c.get(bp).i32(k * CW * 4).i32Add().set(bp)
    c.get(col).i32(CW * 4).i32Add().tee(col).i32(npad * 4).i32LtU().brIf(0)
    c.end() // column loop
    c.get(aPtr).i32(R * k * 4).i32Add().set(aPtr)
    c.get(rowPtr).i32(R * 4).i32Add().set(rowPtr)
    c.get(outPtr).i32(R * 3 * CW * 4).i32Add().set(outPtr)
    c.get(i).i32(R).i32Add().tee(i).get(rows).i32LtU().brIf(0)
    c.end().end() // row loop, block
    return c
  }

  run(B: AnyTypedArray[], out: Int32Array): void {
    const { m, n, k, npad } = this
    const L = this.layout
    const { memory, run, threads } = this.module()
    const f32 = new Float32Array(memory.buffer)
    const i32 = new Int32Array(memory.buffer)
    const b = B[this.slots!.b] as Float32Array
    // pack B into contiguous panels [n/CW][k][CW] so each column chunk streams sequentially
    for (let c0 = 0, p = 0; c0 < npad; c0 += CW) {
      const w = Math.min(CW, n - c0)
      for (let d = 0; d < k; d++, p += CW) {
        const src = d * n + c0
        for (let j = 0; j < w; j++) f32[p + j] = b[src + j]!
      }
    }
    this.colTerms.forEach((t, ci) => this.termKernels[t]!(B, f32, L.col / 4 + ci * npad, 0, n))
    const a = B[this.slots!.a] as Float32Array
    const T = (threads?.count ?? 0) + 1
    for (let round = 0; round < m; round += T * CHUNK) {
      // stage every thread's chunk, start the workers, compute chunk 0 here, then collect
      const chunks: { r0: number; cnt: number; at: number }[] = []
      for (let t = 0; t < T && round + t * CHUNK < m; t++) {
        const r0 = round + t * CHUNK
        const cnt = Math.min(CHUNK, m - r0)
        const at = L.base + t * L.perThread
        const padded = Math.ceil(cnt / R) * R
        f32.set(a.subarray(r0 * k, (r0 + cnt) * k), (at + L.a) / 4)
        if (padded > cnt) f32.fill(0, (at + L.a) / 4 + cnt * k, (at + L.a) / 4 + padded * k)
        this.rowTerms.forEach((tm, ri) => this.termKernels[tm]!(B, f32, (at + L.row) / 4 + ri * CHUNK, r0, cnt))
        chunks.push({ r0, cnt, at })
        if (t > 0) threads!.start(t - 1, [padded, at + L.a, at + L.row, at + L.out])
      }
      const c0 = chunks[0]!
      run(Math.ceil(c0.cnt / R) * R, c0.at + L.a, c0.at + L.row, c0.at + L.out)
      for (let t = 1; t < chunks.length; t++) threads!.wait(t - 1)
      for (const { r0, cnt, at } of chunks) this.collect(f32, i32, (at + L.out) / 4, r0, cnt, out)
    }
  }

  /** Reduce each row's per-lane argmin state: a NaN wins at its first index, else the least value, then the least index. */
  private collect(f32: Float32Array, i32: Int32Array, outBase: number, r0: number, cnt: number, out: Int32Array): void {
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
