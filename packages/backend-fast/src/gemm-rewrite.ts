import type { Eqn, Program, Var } from '@tessera/core'
import { makeProgram } from '@tessera/core'

/** Whether `perm` swaps the last two axes and keeps the others in place (a matrix transpose per batch). */
export function swapsLastTwo(perm: readonly number[]): boolean {
  const r = perm.length
  if (r < 2 || perm[r - 1] !== r - 2 || perm[r - 2] !== r - 1) return false
  for (let i = 0; i < r - 2; i++) if (perm[i] !== i) return false
  return true
}

/**
 * Rewrites that let the GEMM kernel take every dense product of a training step with no
 * transposed copy, each exact (same products, same order, so the reference gives the same bits):
 * - transpose(transpose(x)) is one transpose with the composed permutation, or x itself;
 * - transpose(matmul(a, b)), when the product is read only there, is matmul(bᵀ, aᵀ): a weight's
 *   gradient (xᵀ·g, transposed back to the weight's layout) is then computed in that layout, and
 *   the optimizer reads it contiguously instead of through a strided index.
 * The transposes left in front of a matmul are read through by the plan (see plan.ts).
 */
export function foldGemmTransposes(p: Program): Program {
  const uses = new Map<number, number>()
  for (const e of p.eqns) for (const v of e.inputs) uses.set(v.id, (uses.get(v.id) ?? 0) + 1)
  for (const v of p.outputs) uses.set(v.id, (uses.get(v.id) ?? 0) + 1)
  let nextId = 1 + Math.max(0, ...p.inputs.map((v) => v.id), ...p.eqns.map((e) => e.out.id))
  const defs = new Map<number, Eqn>()
  const rename = new Map<number, Var>()
  const use = (v: Var): Var => rename.get(v.id) ?? v
  const eqns: Eqn[] = []
  let changed = false

  /** transpose[perm](x) with x's own transpose folded in; x itself when the result is the identity. */
  const transposeOf = (x: Var, perm: readonly number[], out: Var | undefined): Var => {
    const d = defs.get(x.id)
    if (d && d.prim === 'transpose') {
      const inner = d.params.perm
      const composed = perm.map((i) => inner[i]!)
      changed = true
      if (composed.every((a, i) => a === i)) return d.inputs[0]!
      return push('transpose', { perm: composed }, [d.inputs[0]!], out)
    }
    return push('transpose', { perm }, [x], out)
  }
  const push = (prim: 'transpose' | 'matmul', params: object, inputs: Var[], out: Var | undefined): Var => {
    let o = out
    if (!o) {
      const s = inputs[0]!.aval.shape
      const shape = prim === 'transpose' ? (params as { perm: number[] }).perm.map((i) => s[i]!) : [...s.slice(0, -1), inputs[1]!.aval.shape[s.length - 1]!]
      o = { id: nextId++, aval: { shape, dtype: inputs[0]!.aval.dtype } }
    }
    const e = { prim, params, inputs, out: o } as Eqn
    eqns.push(e)
    defs.set(o.id, e)
    return o
  }

  for (const e0 of p.eqns) {
    const e = e0.inputs.some((v) => rename.has(v.id)) ? ({ ...e0, inputs: e0.inputs.map(use) } as Eqn) : e0
    if (e.prim === 'transpose') {
      const x = e.inputs[0]!
      const d = defs.get(x.id)
      if (d && d.prim === 'matmul' && swapsLastTwo(e.params.perm) && uses.get(x.id) === 1) {
        // (a b)ᵀ = bᵀ aᵀ; the matmul that made x is now dead (its one reader was this transpose)
        const perm = e.params.perm
        const [a, b] = d.inputs as [Var, Var]
        push('matmul', {}, [transposeOf(b, perm, undefined), transposeOf(a, perm, undefined)], e.out)
        changed = true
        continue
      }
      const r = transposeOf(x, e.params.perm, e.out)
      if (r !== e.out) rename.set(e.out.id, r)
      continue
    }
    eqns.push(e)
    defs.set(e.out.id, e)
  }
  if (!changed) return p
  // the matmuls the rewrite replaced are dead: dropped here, so the program is built once
  const outputs = p.outputs.map(use)
  const live = new Set(outputs.map((v) => v.id))
  const keep = eqns.map(() => false)
  for (let k = eqns.length - 1; k >= 0; k--) {
    if (!live.has(eqns[k]!.out.id)) continue
    keep[k] = true
    for (const v of eqns[k]!.inputs) live.add(v.id)
  }
  return makeProgram(p.inputs, eqns.filter((_, k) => keep[k]), outputs)
}
