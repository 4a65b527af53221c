import { I32, V128, assemble } from './asm.js'
import type { ChunkedReads, ElemExpr } from './elementwise.js'
import { CHUNK_ELEMS, chunkOf, elementwiseReads, lcm } from './elementwise.js'
import { ChainCode, F64 } from './simd-ops.js'

/**
 * The sum of every element of a float32 elementwise expression (a loss: mean((y + b - x)^2)'s
 * sum) in WebAssembly: the expression four elements at a time in float32x4 (IEEE float32 add,
 * sub, mul, div, sqrt, neg and abs round as `fround` of the float64 op), its values added one by
 * one in element order into a float64 accumulator from +0, rounded once at the end: the
 * generated loop's (and the reference's) bits.
 *
 * Memory: the float64 sum at 0, single values from 16 (16 bytes each, splat by the host), then
 * the whole operands' chunks (`padded` floats each) and the repeated rows (tiled over a chunk
 * once per call).
 */
const OPS = new Set(['add', 'sub', 'mul', 'div', 'sqrt', 'neg', 'abs'])

/** Whether the sum kernel takes the expression: float32 reads and the ops above only. */
export function sumFits(e: ElemExpr): boolean {
  if (e.type !== 'f32') return false
  if (e.kind !== 'op') return e.kind !== 'perRow'
  return OPS.has(e.prim) && e.args.every(sumFits)
}

interface Layout extends ChunkedReads {
  readonly data: number
  readonly bytes: number
}

function layoutOf(e: ElemExpr, n: number): Layout | undefined {
  const { whole, single, rows, perRow, width } = elementwiseReads([e])
  if (width > CHUNK_ELEMS) return undefined
  const { chunk, padded } = chunkOf(n, lcm(width, 4))
  const data = 16 + 16 * single.length
  return { n, chunk, padded, whole, rows, perRow, single, data, bytes: data + 4 * padded * (whole.length + rows.length) }
}

function moduleOf(e: ElemExpr, L: Layout, pages: number): WebAssembly.Module {
  // run(bytes, tail): full vectors up to byte offset `bytes` of each region, then `tail` (0-3) lanes of the next
  const c = new ChainCode(2)
  const p = c.local(I32), acc = c.local(F64), v = c.local(V128)
  const uses = new Map<ElemExpr, number>()
  const count = (x: ElemExpr) => {
    uses.set(x, (uses.get(x) ?? 0) + 1)
    if (uses.get(x) === 1 && x.kind === 'op') x.args.forEach(count)
  }
  count(e)
  let temps = new Map<ElemExpr, number>()
  const locals: number[] = []
  const emit = (x: ElemExpr): void => {
    switch (x.kind) {
      case 'read': c.get(p).vLoad(L.data + L.whole.indexOf(x.slot) * L.padded * 4); return
      case 'row': c.get(p).vLoad(L.data + (L.whole.length + L.rows.indexOf(x.slot)) * L.padded * 4); return
      case 'scalar': c.i32(0).vLoad(16 + 16 * L.single.indexOf(x.slot)); return
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
          default: throw new Error(`reduce-sum: ${x.prim} is not supported`)
        }
        if ((uses.get(x) ?? 0) > 1) {
          const l = locals.pop() ?? c.local(V128)
          temps.set(x, l)
          c.tee(l)
        }
      }
    }
  }
  /** The expression's vector at p into v, then lanes 0..lanes-1 added in order (lanes: a count, or the tail local). */
  const addLanes = (lanes: number | 'tail') => {
    temps = new Map()
    emit(e)
    c.set(v)
    for (let l = 0; l < 4; l++) {
      if (lanes === 'tail') {
        if (l === 3) break
        c.get(1).i32(l).i32GtU().ifThen()
      }
      c.get(acc).get(v).f32x4ExtractLane(l).f64PromoteF32().f64Add().set(acc)
      if (lanes === 'tail') c.end()
    }
  }
  c.i32(0).f64Load(0).set(acc)
  c.i32(0).set(p)
  c.block()
  c.get(0).i32(0).i32LeU().brIf(0)
  c.loop()
  addLanes(4)
  c.get(p).i32(16).i32Add().tee(p).get(0).i32LtU().brIf(0)
  c.end()
  c.end()
  c.block()
  c.get(1).i32(0).i32LeU().brIf(0)
  addLanes('tail')
  c.end()
  c.i32(0).get(acc).f64Store(0)
  return new WebAssembly.Module(assemble(pages, [{ name: 'run', code: c }], false) as BufferSource)
}

export type SumRun = (B: readonly ArrayLike<number>[]) => number

/** The sum of `e` over its `n` elements, or undefined where the kernel does not take it (its module compiled on first use). */
export function sumKernel(e: ElemExpr, n: number): SumRun | undefined {
  if (!sumFits(e) || n < 4) return undefined
  const L = layoutOf(e, n)
  if (!L) return undefined
  let inst: { run(bytes: number, tail: number): void; f32: Float32Array; f64: Float64Array } | undefined
  const get = () => {
    if (inst) return inst
    const pages = Math.max(1, Math.ceil(L.bytes / 65536))
    const memory = new WebAssembly.Memory({ initial: pages, maximum: pages })
    const { run } = new WebAssembly.Instance(moduleOf(e, L, pages), { env: { memory } }).exports as { run(bytes: number, tail: number): void }
    return (inst = { run, f32: new Float32Array(memory.buffer), f64: new Float64Array(memory.buffer) })
  }
  return (B) => {
    const { run, f32, f64 } = get()
    L.single.forEach((s, i) => f32.fill(B[s]![0]!, 4 + 4 * i, 8 + 4 * i))
    L.rows.forEach((s, r) => {
      const row = B[s] as Float32Array, at = L.data / 4 + (L.whole.length + r) * L.padded
      for (let q = 0; q < L.chunk; q += row.length) f32.set(row, at + q)
    })
    f64[0] = 0
    for (let lo = 0; lo < L.n; lo += L.chunk) {
      const len = Math.min(L.chunk, L.n - lo)
      L.whole.forEach((s, w) => f32.set((B[s] as Float32Array).subarray(lo, lo + len), L.data / 4 + w * L.padded))
      run(16 * Math.floor(len / 4), len % 4)
    }
    return f64[0]!
  }
}
