import type { Eqn, Var } from '@tessera/core'
import { Code, V128, assemble } from './asm.js'

/**
 * Float32 elementwise loops as WebAssembly SIMD, four elements a step: the optimizer's updates
 * (Adam's moments and parameter step) over arrays of 10^5 elements, which as JS loops cost a
 * float64 op and a rounding per float32 op. Only add, sub, mul, div, sqrt, neg and abs of float32
 * are taken: IEEE float32 arithmetic rounds each of them exactly as Math.fround of the float64 op
 * does (a float64 result of float32 operands rounds once to the same float32), so the results
 * are the reference's bits. Operands are whole stored values of the output's size (read at the
 * output's index), stored vectors broadcast along the leading axes (biases), or single stored
 * values and float32 constants broadcast to every element.
 */
export type ElemExpr =
  | { readonly kind: 'read'; readonly slot: number }
  | { readonly kind: 'scalar'; readonly slot: number }
  /** A stored vector of `width` elements repeated along the output (a bias): element o reads o % width. */
  | { readonly kind: 'row'; readonly slot: number; readonly width: number }
  | { readonly kind: 'const'; readonly value: number }
  | { readonly kind: 'op'; readonly prim: ElemOp; readonly args: readonly ElemExpr[]; readonly id: number }

type ElemOp = 'add' | 'sub' | 'mul' | 'div' | 'sqrt' | 'neg' | 'abs'
const OPS: ReadonlySet<string> = new Set<ElemOp>(['add', 'sub', 'mul', 'div', 'sqrt', 'neg', 'abs'])
const sizeOf = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)

/**
 * The expression computing stored `out` from buffers, or undefined when some part is outside
 * the subset (then the JS loop runs it). `bufSlot` gives the slot of a stored value.
 */
export function elementwiseExpr(out: Var, def: (v: Var) => Eqn | undefined, bufSlot: (v: Var) => number | undefined): ElemExpr | undefined {
  const n = sizeOf(out)
  if (out.aval.dtype !== 'float32' || n < 4) return undefined
  const memo = new Map<number, ElemExpr | null>()
  const scalar = (v: Var): ElemExpr | undefined => {
    if (v.aval.dtype !== 'float32' || sizeOf(v) !== 1) return undefined
    const s = bufSlot(v)
    if (s !== undefined) return { kind: 'scalar', slot: s }
    const d = def(v)
    if (d?.prim === 'full') return { kind: 'const', value: Math.fround(d.params.value) }
    if (d?.prim === 'reshape' || d?.prim === 'broadcast') return scalar(d.inputs[0]!)
    return undefined
  }
  /** A stored vector broadcast along out's leading axes (its shape, leading 1s dropped, is out's trailing one). */
  const row = (u: Var): ElemExpr | undefined => {
    let x = u
    while (bufSlot(x) === undefined) {
      const d = def(x)
      if (d?.prim !== 'reshape') return undefined
      x = d.inputs[0]!
    }
    const dims = u.aval.shape.slice(u.aval.shape.findIndex((a) => a !== 1))
    const tail = out.aval.shape.slice(out.aval.shape.length - dims.length)
    const width = sizeOf(u)
    if (x.aval.dtype !== 'float32' || width < 2 || width > CHUNK || u.aval.shape.every((a) => a === 1) || dims.some((a, i) => a !== tail[i])) return undefined
    return { kind: 'row', slot: bufSlot(x)!, width }
  }
  const walk = (v: Var, root: boolean): ElemExpr | undefined => {
    if (v.aval.dtype !== 'float32' || sizeOf(v) !== n) return undefined
    if (!root) {
      const s = bufSlot(v)
      if (s !== undefined) return { kind: 'read', slot: s }
    }
    const hit = memo.get(v.id)
    if (hit !== undefined) return hit ?? undefined
    const d = def(v)
    let r: ElemExpr | undefined
    if (!d) r = undefined
    else if (d.prim === 'full') r = { kind: 'const', value: Math.fround(d.params.value) }
    else if (d.prim === 'broadcast') r = scalar(d.inputs[0]!) ?? row(d.inputs[0]!)
    // same element count, row-major: element o of the reshape is element o of its operand
    else if (d.prim === 'reshape' || d.prim === 'stop_gradient') r = walk(d.inputs[0]!, false)
    else if (OPS.has(d.prim)) {
      const args = d.inputs.map((x) => walk(x, false))
      r = args.every((a) => a !== undefined) ? { kind: 'op', prim: d.prim as ElemOp, args: args as ElemExpr[], id: v.id } : undefined
    }
    memo.set(v.id, r ?? null)
    return r
  }
  const e = walk(out, true)
  return e && e.kind === 'op' ? e : undefined
}

/** Slots the expressions read, whole, repeated rows and single, in first-use order. */
export function elementwiseReads(es: readonly ElemExpr[]): { whole: number[]; single: number[]; rows: number[]; width: number } {
  const whole: number[] = [], single: number[] = [], rows: number[] = []
  let width = 1
  const seen = new Set<ElemExpr>()
  const go = (x: ElemExpr) => {
    if (seen.has(x)) return
    seen.add(x)
    if (x.kind === 'read' && !whole.includes(x.slot)) whole.push(x.slot)
    else if (x.kind === 'scalar' && !single.includes(x.slot)) single.push(x.slot)
    else if (x.kind === 'row' && !rows.includes(x.slot)) {
      rows.push(x.slot)
      width = lcm(width, x.width)
    } else if (x.kind === 'op') x.args.forEach(go)
  }
  es.forEach(go)
  return { whole, single, rows, width }
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b))
const lcm = (a: number, b: number) => (a / gcd(a, b)) * b

/**
 * One kernel, run on chunks of `chunk` elements (a multiple of every repeated row's width, so a
 * chunk starts at a row; `padded` is it rounded up to whole vectors) (the host copies each chunk of every
 * operand in and of every output out, so the kernel's memory stays in L2 however long the arrays
 * are): operands at 16-byte aligned regions of `padded` floats (operand w at w * padded * 4), the
 * single values after them (16 bytes each), then the outputs (output o at outOff + o * padded * 4).
 */
export interface ElemLayout {
  readonly n: number
  readonly chunk: number
  readonly padded: number
  readonly whole: readonly number[]
  /** Repeated rows, each tiled over a `padded` region after the whole operands (filled once per call). */
  readonly rows: readonly number[]
  readonly single: readonly number[]
  readonly singleOff: number
  readonly outOff: number
  readonly bytes: number
}

/** Elements per chunk: 32 KiB per operand and output. */
const CHUNK = 8192

export function elementwiseLayout(es: readonly ElemExpr[], n: number): ElemLayout {
  const { whole, single, rows, width } = elementwiseReads(es)
  const chunk = Math.min(n, Math.max(width, Math.floor(CHUNK / width) * width))
  const padded = Math.ceil(chunk / 4) * 4
  const singleOff = (whole.length + rows.length) * padded * 4
  const outOff = singleOff + 16 * single.length
  return { n, chunk, padded, whole, rows, single, singleOff, outOff, bytes: outOff + 4 * padded * es.length }
}

/** One loop computing every expression per group of four elements (shared subexpressions once); `run(bytes)` covers one chunk. */
export function elementwiseModule(es: readonly ElemExpr[], L: ElemLayout, pages: number): WebAssembly.Module {
  const c = new Code(1)
  const bytes = 0
  const p = c.local(0x7f)
  const splats = L.single.map(() => c.local(V128))
  const temps = new Map<ElemExpr, number>()
  L.single.forEach((_, i) => c.i32(0).vLoad32Splat(L.singleOff + 16 * i).set(splats[i]!))
  // how often each op is used: shared subexpressions (and outputs read by later ones) stay in a local
  const uses = new Map<ElemExpr, number>()
  const count = (x: ElemExpr) => {
    uses.set(x, (uses.get(x) ?? 0) + 1)
    if (uses.get(x) === 1 && x.kind === 'op') x.args.forEach(count)
  }
  es.forEach(count)
  const emit = (x: ElemExpr): void => {
    switch (x.kind) {
      case 'read': c.get(p).vLoad(L.whole.indexOf(x.slot) * L.padded * 4); return
      case 'scalar': c.get(splats[L.single.indexOf(x.slot)]!); return
      case 'row': c.get(p).vLoad((L.whole.length + L.rows.indexOf(x.slot)) * L.padded * 4); return
      case 'const': c.vConstF32([x.value, x.value, x.value, x.value]); return
      case 'op': {
        const t = temps.get(x)
        if (t !== undefined) {
          c.get(t)
          return
        }
        x.args.forEach(emit)
        switch (x.prim) {
          case 'add': c.f32x4Add(); break
          case 'sub': c.f32x4Sub(); break
          case 'mul': c.f32x4Mul(); break
          case 'div': c.f32x4Div(); break
          case 'sqrt': c.f32x4Sqrt(); break
          case 'neg': c.f32x4Neg(); break
          case 'abs': c.f32x4Abs(); break
        }
        if ((uses.get(x) ?? 0) > 1) {
          const l = c.local(V128)
          temps.set(x, l)
          c.tee(l)
        }
      }
    }
  }
  // p walks the byte offset of the current 4 elements; every region is addressed from it
  c.i32(0).set(p)
  c.loop()
  es.forEach((e, o) => {
    c.get(p)
    emit(e)
    c.vStore(L.outOff + o * L.padded * 4)
  })
  temps.clear()
  c.get(p).i32(16).i32Add().tee(p).get(bytes).i32LtU().brIf(0)
  c.end()
  return new WebAssembly.Module(assemble(pages, [{ name: 'run', code: c }], false) as BufferSource)
}

export type ElemRun = (B: readonly ArrayLike<number>[], outs: readonly Float32Array[]) => void

/** A loop's outputs (their slots) and the expressions computing them; later ones may read earlier ones. */
export interface ElemGroup {
  readonly outs: readonly number[]
  readonly exprs: readonly ElemExpr[]
  readonly n: number
}

/** Reads of the group's earlier outputs become those outputs' expressions (kept in registers). */
function substitute(e: ElemExpr, outs: ReadonlyMap<number, ElemExpr>, memo = new Map<ElemExpr, ElemExpr>()): ElemExpr {
  const hit = memo.get(e)
  if (hit) return hit
  let r: ElemExpr = e
  if (e.kind === 'read' && outs.has(e.slot)) r = outs.get(e.slot)!
  else if (e.kind === 'op') {
    const args = e.args.map((a) => substitute(a, outs, memo))
    if (args.some((a, i) => a !== e.args[i])) r = { ...e, args }
  }
  memo.set(e, r)
  return r
}

/**
 * Merges elementwise loops of the same size into one pass where the order allows: a loop joins
 * the group opened by an earlier one when everything it reads exists at the group's position
 * (written before it, or by the group itself). Adam's three loops per parameter (moments and the
 * new parameter) become one pass reading the gradient once. `steps` is in run order; `reads` and
 * `writes` give a step's slots; `elem` says which steps are loops (with their expression).
 */
export function groupElementwise<S>(
  steps: readonly S[],
  writes: (s: S) => readonly number[] | undefined,
  elem: (s: S) => { out: number; expr: ElemExpr; n: number } | undefined,
): (S | ElemGroup)[] {
  const writtenAt = new Map<number, number>()
  const result: (S | { outs: number[]; exprs: ElemExpr[]; n: number; at: number; byOut: Map<number, ElemExpr>; reads: Set<number> })[] = []
  const open: { outs: number[]; exprs: ElemExpr[]; n: number; at: number; byOut: Map<number, ElemExpr>; reads: Set<number> }[] = []
  const groups = new Set<unknown>()
  steps.forEach((s, i) => {
    const e = elem(s)
    if (e) {
      const { whole, single, rows } = elementwiseReads([e.expr])
      const ready = (g: (typeof open)[number]) => [...whole, ...single, ...rows].every((r) => g.byOut.has(r) || (writtenAt.get(r) ?? -1) < g.at)
      // only loops that share an operand (a parameter's gradient, or a group's output) join
      const shares = (g: (typeof open)[number]) => whole.some((r) => g.byOut.has(r) || g.reads.has(r))
      const g = open.find((x) => x.n === e.n && shares(x) && ready(x))
      if (g) {
        const expr = substitute(e.expr, g.byOut)
        g.outs.push(e.out)
        g.exprs.push(expr)
        g.byOut.set(e.out, expr)
        for (const r of whole) g.reads.add(r)
        writtenAt.set(e.out, g.at)
        return
      }
      const ng = { outs: [e.out], exprs: [e.expr], n: e.n, at: i, byOut: new Map([[e.out, e.expr]]), reads: new Set(whole) }
      open.push(ng)
      groups.add(ng)
      result.push(ng)
      writtenAt.set(e.out, i)
      return
    }
    const ws = writes(s)
    // a step whose writes are not known (a row chain) closes every group
    if (ws === undefined) open.length = 0
    else for (const w of ws) writtenAt.set(w, i)
    result.push(s)
  })
  return result.map((r) => (groups.has(r) ? { outs: (r as ElemGroup).outs, exprs: (r as ElemGroup).exprs, n: (r as ElemGroup).n } : r)) as (S | ElemGroup)[]
}

/**
 * Kernels sharing one memory (they run one at a time on the calling thread), compiled on first
 * use once every kernel of the plan is known: `add` registers one and returns its runner.
 */
export function elementwiseSet(): { add(g: ElemGroup): ElemRun } {
  const pending: { es: readonly ElemExpr[]; L: ElemLayout; run?: (bytes: number) => void }[] = []
  let f32: Float32Array | undefined
  let memory: WebAssembly.Memory | undefined
  const build = () => {
    const pages = Math.max(1, Math.ceil(Math.max(...pending.map((k) => k.L.bytes)) / 65536))
    // not shared: these loops run on the calling thread (and a browser page needs no cross-origin isolation)
    memory = new WebAssembly.Memory({ initial: pages, maximum: pages })
    f32 = new Float32Array(memory.buffer)
    for (const k of pending) k.run = (new WebAssembly.Instance(elementwiseModule(k.es, k.L, pages), { env: { memory } }).exports as { run: (bytes: number) => void }).run
  }
  return {
    add(g) {
      const k: (typeof pending)[number] = { es: g.exprs, L: elementwiseLayout(g.exprs, g.n) }
      pending.push(k)
      const { L } = k
      return (B, outs) => {
        if (!memory) build()
        const m = f32!
        L.single.forEach((s, i) => (m[(L.singleOff >> 2) + 4 * i] = B[s]![0]!))
        L.rows.forEach((s, r) => {
          const v = B[s] as Float32Array, at = (L.whole.length + r) * L.padded
          for (let q = 0; q < L.chunk; q += v.length) m.set(v, at + q)
        })
        for (let lo = 0; lo < L.n; lo += L.chunk) {
          const len = Math.min(L.chunk, L.n - lo)
          L.whole.forEach((s, w) => m.set((B[s] as Float32Array).subarray(lo, lo + len), w * L.padded))
          k.run!(Math.ceil(len / 4) * 16)
          outs.forEach((out, o) => {
            const at = (L.outOff >> 2) + o * L.padded
            out.set(m.subarray(at, at + len), lo)
          })
        }
      }
    },
  }
}
