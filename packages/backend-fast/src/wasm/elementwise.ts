import type { Eqn, Var } from '@tessera/core'
import { Code, V128, assemble } from './asm.js'

/**
 * Float32 elementwise loops as WebAssembly SIMD, four elements a step: the optimizer's updates
 * (Adam's moments and parameter step) over arrays of 10^5 elements, which as JS loops cost a
 * float64 op and a rounding per float32 op. Only add, sub, mul, div, sqrt, neg and abs of float32
 * are taken: IEEE float32 arithmetic rounds each of them exactly as Math.fround of the float64 op
 * does (a float64 result of float32 operands rounds once to the same float32), so the results
 * are the reference's bits. Operands are whole stored values of the output's size (read at the
 * output's index) or single stored values and float32 constants broadcast to every element.
 */
export type ElemExpr =
  | { readonly kind: 'read'; readonly slot: number }
  | { readonly kind: 'scalar'; readonly slot: number }
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
    else if (d.prim === 'broadcast') r = scalar(d.inputs[0]!)
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

/** Slots an expression reads, whole and single, in first-use order. */
export function elementwiseReads(e: ElemExpr): { whole: number[]; single: number[] } {
  const whole: number[] = [], single: number[] = []
  const seen = new Set<ElemExpr>()
  const go = (x: ElemExpr) => {
    if (seen.has(x)) return
    seen.add(x)
    if (x.kind === 'read' && !whole.includes(x.slot)) whole.push(x.slot)
    else if (x.kind === 'scalar' && !single.includes(x.slot)) single.push(x.slot)
    else if (x.kind === 'op') x.args.forEach(go)
  }
  go(e)
  return { whole, single }
}

/**
 * One kernel: whole operands at 16-byte aligned regions of `padded` floats (operand w at
 * w * padded * 4), the single values after them (16 bytes each), the output after those.
 */
export interface ElemLayout {
  readonly n: number
  readonly padded: number
  readonly whole: readonly number[]
  readonly single: readonly number[]
  readonly singleOff: number
  readonly outOff: number
  readonly bytes: number
}

export function elementwiseLayout(e: ElemExpr, n: number): ElemLayout {
  const { whole, single } = elementwiseReads(e)
  const padded = Math.ceil(n / 4) * 4
  const singleOff = whole.length * padded * 4
  const outOff = singleOff + 16 * single.length
  return { n, padded, whole, single, singleOff, outOff, bytes: outOff + 4 * padded }
}

export function elementwiseModule(e: ElemExpr, L: ElemLayout, pages: number): WebAssembly.Module {
  const c = new Code(0)
  const p = c.local(0x7f)
  const splats = L.single.map(() => c.local(V128))
  const temps = new Map<ElemExpr, number>()
  L.single.forEach((_, i) => c.i32(0).vLoad32Splat(L.singleOff + 16 * i).set(splats[i]!))
  // how often each op is used: shared subexpressions are kept in a local
  const uses = new Map<ElemExpr, number>()
  const count = (x: ElemExpr) => {
    uses.set(x, (uses.get(x) ?? 0) + 1)
    if (uses.get(x) === 1 && x.kind === 'op') x.args.forEach(count)
  }
  count(e)
  const emit = (x: ElemExpr): void => {
    switch (x.kind) {
      case 'read': c.get(p).vLoad(L.whole.indexOf(x.slot) * L.padded * 4); return
      case 'scalar': c.get(splats[L.single.indexOf(x.slot)]!); return
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
  c.get(p)
  emit(e)
  c.vStore(L.outOff)
  temps.clear()
  c.get(p).i32(16).i32Add().tee(p).i32(L.padded * 4).i32LtU().brIf(0)
  c.end()
  return new WebAssembly.Module(assemble(pages, [{ name: 'run', code: c }]) as BufferSource)
}

export type ElemRun = (B: readonly ArrayLike<number>[], out: Float32Array) => void

/**
 * Kernels sharing one memory (they run one at a time on the calling thread), compiled on first
 * use once every kernel of the plan is known: `add` registers one and returns its runner.
 */
export function elementwiseSet(): { add(e: ElemExpr, n: number): ElemRun } {
  const pending: { e: ElemExpr; L: ElemLayout; run?: () => void }[] = []
  let f32: Float32Array | undefined
  let memory: WebAssembly.Memory | undefined
  const build = () => {
    const pages = Math.max(1, Math.ceil(Math.max(...pending.map((k) => k.L.bytes)) / 65536))
    memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true })
    f32 = new Float32Array(memory.buffer)
    for (const k of pending) k.run = (new WebAssembly.Instance(elementwiseModule(k.e, k.L, pages), { env: { memory } }).exports as { run: () => void }).run
  }
  return {
    add(e, n) {
      const k: (typeof pending)[number] = { e, L: elementwiseLayout(e, n) }
      pending.push(k)
      const { L } = k
      return (B, out) => {
        if (!memory) build()
        const m = f32!
        L.whole.forEach((s, w) => m.set(B[s] as Float32Array, w * L.padded))
        L.single.forEach((s, i) => (m[(L.singleOff >> 2) + 4 * i] = B[s]![0]!))
        k.run!()
        out.set(m.subarray(L.outOff >> 2, (L.outOff >> 2) + L.n))
      }
    },
  }
}
