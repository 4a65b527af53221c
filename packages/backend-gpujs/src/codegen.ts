import type { ElemOp, Kernel, KNode, NodeId, Schedule } from '@tessera/core'
import { loopIndexName, loopLevel, maxLoopSize, scheduleKernel } from '@tessera/core'

/**
 * Kernel source for gpu.js: one JS function string per fused kernel, every size a literal, the
 * output flat and indexed by `this.thread.x`. All values are floats (ints and bools are exact
 * below 2^24), so every literal carries a decimal point: gpu.js would type `0` as an integer.
 *
 * gpu.js traps avoided here: no `Math.round` (it is floor(x + 0.5)), no native tanh/atanh/pow
 * (GLSL's overflow or are undefined for negative bases), integer division as
 * floor((i + 0.5) / n) plus an exact remainder correction, loops with literal bounds only.
 */
export interface KernelSource {
  readonly source: string
  readonly loopSize: number
}

export function fmtNum(v: number): string {
  // WGSL rejects constant 0/0 and 1/0: divide by a zero the compiler cannot see (zr = ti * 0)
  if (Number.isNaN(v)) return '(zr / zr)'
  if (!Number.isFinite(v)) return v > 0 ? '(1.0 / zr)' : '(-1.0 / zr)'
  const f = Math.fround(v)
  const s = exactLiteral(Math.abs(f))
  return f < 0 || Object.is(f, -0) ? `(${Object.is(f, -0) ? '-0.0' : `-${s}`})` : s
}

const plainLiteral = (v: number): string => {
  let s = String(v)
  if (!/[.e]/.test(s)) s += '.0'
  else if (/e/.test(s) && !/\./.test(s)) s = s.replace('e', '.0e')
  return s
}

/**
 * A literal that every GL backend turns into exactly this float32. Mesa (headlessgl, llvmpipe)
 * holds about 2% of float32 constants one ulp off: 0.11980878561735153 and 2^-96 written out, or
 * folded from 1.9169405698776245 * 0.0625, come back wrong, while mantissas in [1, 2), integers
 * up to 2^24 and powers of two up to 2^±24 come back exact, and so does the same product when it
 * runs (found by scripts/measure-error.ts: `full` was not exact). So any other value is written
 * (m + zr) * 2^k1 * 2^k2 ..., m in [1, 2), |ki| <= 24: `zr` is the kernel's runtime zero, which
 * keeps the compiler from folding the product, and scaling by a power of two is exact in float32
 * (subnormals aside, which GPUs flush anyway).
 */
function exactLiteral(a: number): string {
  if (a === 0 || (Number.isInteger(a) && a <= 2 ** 24)) return plainLiteral(a)
  let e = Math.floor(Math.log2(a))
  // log2 can be off by one near powers of two
  if (2 ** e > a) e--
  else if (2 ** (e + 1) <= a) e++
  const m = a / 2 ** e
  if (e === 0 || e < -126 || (m === 1 && Math.abs(e) <= 24)) return plainLiteral(a)
  const parts = [`(${plainLiteral(m)} + zr)`]
  while (e !== 0) {
    const k = Math.max(-24, Math.min(24, e))
    parts.push(plainLiteral(2 ** k))
    e -= k
  }
  return `(${parts.join(' * ')})`
}

export function kernelSource(k: Kernel): KernelSource {
  const sched = scheduleKernel(k)
  // arguments are named by position, not buffer id, so structurally equal kernels (a residual
  // quantizer's layers) have equal source and share one compiled kernel
  const position = new Map(k.args.map((b, i) => [b, i]))
  const argName = (b: number) => `arg${position.get(b)}`
  const lines: string[] = []
  const ref = (id: NodeId): string => {
    const n = k.nodes[id]!
    if (n.k === 'lit') return fmtNum(n.value)
    if (n.k === 'thread') return 'ti'
    if (n.k === 'ridx') return loopIndexName(loopLevel(n)).replace('r', 'rf')
    return `v${id}`
  }
  const emitNode = (id: NodeId, ind: string) => {
    const n = k.nodes[id]!
    if (n.k === 'lit' || n.k === 'thread' || n.k === 'ridx' || n.k === 'reduce') return
    const out = `v${id}`
    if (n.k === 'load') {
      lines.push(`${ind}let ${out} = ${argName(n.buf)}[${ref(n.at)}];`)
      return
    }
    for (const l of opCode(n, id, n.args.map(ref))) lines.push(ind + l)
  }
  lines.push(`function(${k.args.map(argName).join(', ')}) {`)
  lines.push('  let ti = this.thread.x * 1.0;')
  lines.push('  let zr = ti * 0.0;')
  const block = (s: Schedule, ind: string): void => {
    for (const id of s.pre) emitNode(id, ind)
    if (s.loop) {
      const r = loopIndexName(s.loop.level), rf = r.replace("r", "rf")
      const reds = s.loop.reduces.map((id) => ({ id, n: k.nodes[id] as Extract<KNode, { k: 'reduce' }> }))
      for (const { id } of reds) lines.push(`${ind}let s${id} = 0.0;`, `${ind}let c${id} = 0.0;`)
      lines.push(`${ind}for (let ${r} = 0; ${r} < ${s.loop.size}; ${r}++) {`)
      const ii = ind + '  '
      lines.push(`${ii}let ${rf} = ${r} * 1.0;`)
      block(s.loop.body, ii)
      for (const { id, n } of reds) {
        const v = ref(n.body)
        switch (n.op) {
          case 'sum':
            // Kahan summation: float32 accumulation gets close to the reference's float64 sum
            lines.push(
              `${ii}let y${id} = ${v} - c${id};`,
              `${ii}let t${id} = s${id} + y${id};`,
              `${ii}c${id} = (t${id} - s${id}) - y${id};`,
              `${ii}s${id} = t${id};`,
            )
            break
          case 'max':
          case 'min':
            lines.push(`${ii}s${id} = ${r} == 0 ? ${v} : (${v} ${n.op === 'max' ? '>' : '<'} s${id} ? ${v} : s${id});`)
            break
          case 'argmin':
          case 'argmax':
            // c holds the best value, s its index; ties keep the first index
            lines.push(
              `${ii}let t${id} = ${r} == 0 ? 1.0 : (${v} ${n.op === 'argmin' ? '<' : '>'} c${id} ? 1.0 : 0.0);`,
              `${ii}c${id} = t${id} > 0.5 ? ${v} : c${id};`,
              `${ii}s${id} = t${id} > 0.5 ? ${rf} : s${id};`,
            )
            break
        }
      }
      lines.push(`${ind}}`)
      for (const { id } of reds) lines.push(`${ind}let v${id} = s${id};`)
    }
    for (const id of s.post) emitNode(id, ind)
  }
  block(sched, '  ')
  lines.push(`  return ${ref(k.root)};`)
  lines.push('}')
  return { source: lines.join('\n'), loopSize: maxLoopSize(sched) }
}

/**
 * gpu.js source for each kernel op: `o` is the result variable, `x y z` the operand expressions,
 * `id` makes helper names unique. A mapped type over `ElemOp`, so a new op fails tsc here.
 */
type OpCode = (o: string, x: string, y: string, z: string, id: NodeId, n: Extract<KNode, { k: 'op' }>) => string[]

const one = (o: string, e: string) => [`let ${o} = ${e};`]

/** floor division with the remainder's sign fixed up exactly; a zero divisor gives 0 */
const floorDivMod =
  (mod: boolean): OpCode =>
  (o, x, y, _z, id) => [
    `let q${id} = Math.floor(${x} / ${y});`,
    `let r${id} = ${x} - q${id} * ${y};`,
    `let g${id} = ${y} > 0.0 ? (r${id} < 0.0 ? q${id} - 1.0 : (r${id} >= ${y} ? q${id} + 1.0 : q${id})) : (r${id} > 0.0 ? q${id} - 1.0 : (r${id} <= ${y} ? q${id} + 1.0 : q${id}));`,
    mod ? `let ${o} = ${y} == 0.0 ? 0.0 : ${x} - g${id} * ${y};` : `let ${o} = ${y} == 0.0 ? 0.0 : g${id};`,
  ]

/** index division by a literal: floor((x + 0.5) / n) plus an exact correction */
const indexDivMod =
  (mod: boolean): OpCode =>
  (o, x, _y, _z, id, n) => {
    const d = fmtNum(n.n!)
    return [
      `let q${id} = Math.floor((${x} + 0.5) / ${d});`,
      `let r${id} = ${x} - q${id} * ${d};`,
      mod
        ? `let ${o} = r${id} < 0.0 ? r${id} + ${d} : (r${id} >= ${d} ? r${id} - ${d} : r${id});`
        : `let ${o} = r${id} < 0.0 ? q${id} - 1.0 : (r${id} >= ${d} ? q${id} + 1.0 : q${id});`,
    ]
  }

const opCodes: { readonly [O in ElemOp]: OpCode } = {
  neg: (o, x) => one(o, `-${x}`),
  exp: (o, x) => one(o, `Math.exp(${x})`),
  log: (o, x) => one(o, `Math.log(${x})`),
  sqrt: (o, x) => one(o, `Math.sqrt(${x})`),
  abs: (o, x) => one(o, `Math.abs(${x})`),
  floor: (o, x) => one(o, `Math.floor(${x})`),
  recip: (o, x) => one(o, `1.0 / ${x}`),
  sign: (o, x) => one(o, `${x} > 0.0 ? 1.0 : (${x} < 0.0 ? -1.0 : ${x})`),
  // half to even
  round: (o, x, _y, _z, id) => [
    `let f${id} = Math.floor(${x});`,
    `let d${id} = ${x} - f${id};`,
    `let ${o} = d${id} > 0.5 ? f${id} + 1.0 : (d${id} < 0.5 ? f${id} : f${id} + (f${id} - 2.0 * Math.floor(f${id} * 0.5)));`,
  ],
  // odd series near 0 (where (1-e)/(1+e) cancels), exp form elsewhere (never overflows)
  tanh: (o, x, _y, _z, id) => [
    `let e${id} = Math.exp(-2.0 * Math.abs(${x}));`,
    `let q${id} = (1.0 - e${id}) / (1.0 + e${id});`,
    `let x${id} = ${x} * ${x};`,
    `let p${id} = ${x} * (1.0 + x${id} * (-0.3333333333 + x${id} * (0.1333333333 + x${id} * (-0.0539682540 + x${id} * 0.0218694885))));`,
    `let ${o} = Math.abs(${x}) < 0.3 ? p${id} : (${x} < 0.0 ? -q${id} : q${id});`,
  ],
  atanh: (o, x, _y, _z, id) => [
    `let x${id} = ${x} * ${x};`,
    `let p${id} = ${x} * (1.0 + x${id} * (0.3333333333 + x${id} * (0.2 + x${id} * (0.1428571429 + x${id} * (0.1111111111 + x${id} * 0.0909090909)))));`,
    `let q${id} = 0.5 * Math.log((1.0 + ${x}) / (1.0 - ${x}));`,
    `let ${o} = Math.abs(${x}) < 0.3 ? p${id} : q${id};`,
  ],
  cast: (o, x, _y, _z, _id, n) =>
    n.dtype === 'int32'
      ? one(o, `${x} < 0.0 ? -Math.floor(-${x}) : Math.floor(${x})`)
      : n.dtype === 'bool'
        ? one(o, `${x} != 0.0 ? 1.0 : 0.0`)
        : one(o, x),
  add: (o, x, y) => one(o, `${x} + ${y}`),
  sub: (o, x, y) => one(o, `${x} - ${y}`),
  mul: (o, x, y) => one(o, `${x} * ${y}`),
  div: (o, x, y) => one(o, `${x} / ${y}`),
  idiv: floorDivMod(false),
  mod: floorDivMod(true),
  pow: (o, x, y, _z, id) => [
    `let a${id} = Math.pow(Math.abs(${x}), ${y});`,
    `let i${id} = Math.floor(${y});`,
    `let h${id} = i${id} - 2.0 * Math.floor(i${id} * 0.5);`,
    `let n${id} = i${id} == ${y} ? (h${id} > 0.5 ? -a${id} : a${id}) : (zr / zr);`,
    `let z${id} = ${y} > 0.0 ? 0.0 : (1.0 / zr);`,
    `let ${o} = ${y} == 0.0 ? 1.0 : (${x} == 0.0 ? z${id} : (${x} < 0.0 ? n${id} : a${id}));`,
  ],
  max: (o, x, y) => one(o, `${x} > ${y} ? ${x} : ${y}`),
  min: (o, x, y) => one(o, `${x} < ${y} ? ${x} : ${y}`),
  lt: (o, x, y) => one(o, `${x} < ${y} ? 1.0 : 0.0`),
  le: (o, x, y) => one(o, `${x} <= ${y} ? 1.0 : 0.0`),
  eq: (o, x, y) => one(o, `${x} == ${y} ? 1.0 : 0.0`),
  where: (o, x, y, z) => one(o, `${x} > 0.5 ? ${y} : ${z}`),
  ixdiv: indexDivMod(false),
  ixmod: indexDivMod(true),
}

function opCode(n: Extract<KNode, { k: 'op' }>, id: NodeId, a: readonly string[]): string[] {
  return opCodes[n.op](`v${id}`, a[0]!, a[1]!, a[2]!, id, n)
}
