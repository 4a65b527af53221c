import type { AnyTypedArray, Var } from '@tessera/core'
import type { EmitEnv } from './emit.js'
import { Emitter, helperNames, kernelHelpers } from './emit.js'
import { Code, I32 } from './wasm/asm.js'
import { tracking } from './loops.js'

/**
 * How the nearest-code kernel (nearest.ts) gets its operands into its memory: the row and column
 * terms, and B packed into panels [npad/cw][k][cw]. Stored values are copied as they are (a typed
 * array copy, or the wasm pack below for a stored B^T); anything else is evaluated by a generated
 * JS loop, as the loop that would have stored it would.
 */

type Env = EmitEnv & { slotOf(v: Var): number }

const elems = (v: Var) => v.aval.shape.reduce((a, b) => a * b, 1)

/** Writes the term's values for rows (or columns) [from, from + count) to dst[dstOff...]. */
export type TermKernel = (B: AnyTypedArray[], dst: Float32Array, dstOff: number, from: number, count: number) => void

/** A row (or column) term of `count` rows (columns): a stored one is copied, anything else evaluated. */
export function termKernel(v: Var, dep: 'row' | 'col', count: number, env: Env): TermKernel {
  // a stored term holds one value per row (column) in order: its leading and broadcast axes have size 1
  if (env.bufName(v) !== undefined && elems(v) === count) {
    const slot = env.slotOf(v)
    return (B, dst, dstOff, from, cnt) => dst.set(B[slot]!.subarray(from, from + cnt) as Float32Array, dstOff)
  }
  const { env: tracked, used } = tracking(env)
  const em = new Emitter(tracked)
  // leading batch axes have size 1: index 0
  const lead = v.aval.shape.slice(0, -2).map(() => '0')
  const val = em.value(v, { axes: [...lead, ...(dep === 'row' ? ['q', '0'] : ['0', 'q'])] })
  const src = [
    ...[...used].map((s) => `const b${s} = B[${s}];`),
    'for (let q = from; q < from + count; q++) {',
    ...em.lines,
    `dst[dstOff + q - from] = ${val};`,
    '}',
  ].join('\n')
  return withHelpers('term(B, dst, dstOff, from, count)', src) as TermKernel
}

/** A generated function (`signature` names it and its parameters) closing over the kernel helpers. */
function withHelpers(signature: string, src: string): unknown {
  const f = new Function(...helperNames, `return function ${signature} {\n${src}\n}`)
  return f(...helperNames.map((h) => kernelHelpers[h as keyof typeof kernelHelpers]))
}

export type PackKernel = (B: AnyTypedArray[], dst: Float32Array) => void

/**
 * Writes B (`v`, k x n) into the kernel's panels [npad/cw][k][cw] (padding columns untouched),
 * evaluating `v` at each (d, j): a stored B is copied; an unstored one (a transpose of a stored
 * value, or an elementwise chain of stored values) is computed once per element, as the loop
 * that would have stored it would.
 */
export function packKernel(v: Var, n: number, cw: number, env: Env): PackKernel {
  const k = v.aval.shape[v.aval.shape.length - 2]!
  const npad = Math.ceil(n / cw) * cw
  const { env: tracked, used } = tracking(env)
  const em = new Emitter(tracked)
  const val = em.value(v, { axes: [...v.aval.shape.slice(0, -2).map(() => '0'), 'd', 'j'] })
  const src = [
    ...[...used].map((s) => `const b${s} = B[${s}];`),
    `for (let c0 = 0, p = 0; c0 < ${npad}; c0 += ${cw}) {`,
    `const w = c0 + ${cw} <= ${n} ? ${cw} : ${n} - c0;`,
    `for (let d = 0; d < ${k}; d++, p += ${cw}) {`,
    'for (let jj = 0; jj < w; jj++) {',
    'const j = c0 + jj;',
    ...em.lines,
    `dst[p + jj] = ${val};`,
    '}',
    '}',
    '}',
  ].join('\n')
  return withHelpers('pack(B, dst)', src) as PackKernel
}

/**
 * The slot of a stored float32 value whose row-major elements are B^T (n rows of k), when B is
 * that value's transpose, through reshapes (a codebook's `cb.mT`, VectorQuantize's
 * `cb.reshape([1, k, d]).mT`): its rows are B's columns, so the wasm pack can copy them.
 */
export function storedTransposeOf(v: Var, env: Env): number | undefined {
  const e = env.def(v)
  if (env.bufName(v) !== undefined || e?.prim !== 'transpose') return undefined
  const r = v.aval.shape.length
  const perm = (e.params as { perm: readonly number[] }).perm
  if (r < 2 || perm[r - 1] !== r - 2 || perm[r - 2] !== r - 1 || perm.slice(0, r - 2).some((p, i) => p !== i)) return undefined
  // B's leading axes have size 1, so the transpose's input is n x k in row-major order, as is
  // anything it is a reshape of
  let w = e.inputs[0]!
  for (let d = env.def(w); env.bufName(w) === undefined && d?.prim === 'reshape'; d = env.def(w)) w = d.inputs[0]!
  return env.bufName(w) !== undefined && w.aval.dtype === 'float32' && elems(w) === elems(v) ? env.slotOf(w) : undefined
}

/**
 * `pack(src, dst, cols)`: the rows of B^T at byte address src (cols of them, k floats each, for
 * B's columns j0 ... j0 + cols - 1, j0 a multiple of cw) into the panels from byte address dst
 * (column j0's panel, at j0 * k * 4): column j goes to lane j mod cw of each of the k panel rows.
 */
export function packCode(k: number, cw: number): Code {
  const c = new Code(3)
  const [src, dst, cols] = [0, 1, 2]
  const j = c.local(I32), jj = c.local(I32), s = c.local(I32), p = c.local(I32), sEnd = c.local(I32)
  c.i32(0).set(j)
  c.i32(0).set(jj)
  c.loop() // columns
  c.get(src).set(s)
  c.get(src).i32(k * 4).i32Add().set(sEnd)
  c.get(dst).get(jj).i32(4).i32Mul().i32Add().set(p)
  c.loop() // k values of the column
  c.get(p).get(s).vLoad32Splat(0).vStore32Lane(0, 0)
  c.get(p).i32(cw * 4).i32Add().set(p)
  c.get(s).i32(4).i32Add().tee(s).get(sEnd).i32LtU().brIf(0)
  c.end()
  c.get(sEnd).set(src)
  c.get(jj).i32(1).i32Add().set(jj)
  // a full panel: the next column starts the next panel
  c.block()
  c.get(jj).i32(cw).i32LtU().brIf(0)
  c.i32(0).set(jj)
  c.get(dst).i32(k * cw * 4).i32Add().set(dst)
  c.end()
  c.get(j).i32(1).i32Add().tee(j).get(cols).i32LtU().brIf(0)
  c.end()
  return c
}
