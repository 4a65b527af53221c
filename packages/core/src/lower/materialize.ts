import type { Caps } from '../backend.js'
import { fmtAval, sizeOf } from '../dtype.js'
import { TesseraError } from '../error.js'
import { primKind } from '../prim.js'
import type { Eqn, EqnOf, Program, Var } from '../program.js'
import { ProgramGraph } from './schedule/graph.js'
import type { NearestPattern } from './schedule/nearest.js'
import { matchNearest } from './schedule/nearest.js'
import { decideStorage } from './schedule/storage.js'

/** Which values of a program get buffers when lowered to one-output kernels: the analyses lowerProgram iterates. */

/**
 * Nearest-code patterns as core's loop schedule recognizes them (its storage decides where an
 * epilogue stops), with the values each computes inline: its distances, their dot product and
 * the broadcasts of its row and column terms, none of them ever a buffer.
 */
export function nearestPatterns(program: Program): { pattern: NearestPattern; inline: number[] }[] {
  const g = new ProgramGraph(program)
  const stored = decideStorage(g)
  return program.eqns.flatMap((e) => {
    const pattern = e.prim === 'argmin' || e.prim === 'argmax' ? matchNearest(e as EqnOf<'argmin'> | EqnOf<'argmax'>, g, (v) => stored.has(v.id)) : undefined
    if (!pattern) return []
    const inline: number[] = []
    const walk = (v: Var): void => {
      if (stored.has(v.id) && v.id !== pattern.matmul.out.id) return
      inline.push(v.id)
      if (v.id !== pattern.matmul.out.id) g.def(v)?.inputs.forEach(walk)
    }
    walk(pattern.select.inputs[0]!)
    return [{ pattern, inline }]
  })
}

/** A value this backend must hold in one buffer (`what` says why: an input, an output, ...) fits its index range. */
export function checkSize(v: Var, caps: Caps, what: string) {
  const n = sizeOf(v.aval.shape)
  const big = n >= caps.exactIntLimit ? n : v.aval.shape.find((d) => d >= caps.exactIntLimit)
  if (big !== undefined)
    throw new TesseraError(
      'backend',
      'lower',
      `${what} ${fmtAval(v.aval)} has ${n} elements; this backend indexes buffers with floats and needs fewer than ${caps.exactIntLimit}`,
    )
}

const isReduction = (e: Eqn) => {
  const k = primKind[e.prim]
  return k === 'reduce' || k === 'argreduce' || k === 'matmul'
}
const isElementwise = (e: Eqn) => {
  const k = primKind[e.prim]
  return k === 'unary' || k === 'binary' || k === 'ternary'
}

/**
 * Reductions inlined where they may not go. Walking each kernel's inlined tree: a reduction
 * inside another reduction's loop, or under a movement op other than reshape/broadcast, is
 * materialized; reductions reached through a broadcast ride along only when the kernel already
 * has a loop of the same length (they share it); reductions of a different length than the
 * kernel's loop are materialized.
 */
export function violations(
  eqns: readonly Eqn[],
  mat: Set<number>,
  isInput: Set<number>,
  defs: Map<number, Eqn>,
  nearArgmins: ReadonlyMap<Eqn, Eqn>,
  onHost: ReadonlySet<number>,
  /** Values too large to store: recomputed where read, their reductions nested. */
  huge: (v: Var) => boolean,
  /** Receives the reductions this pass lets nest inside another loop. */
  nested: Set<Eqn>,
): number[] {
  const out: number[] = []
  // a value found here will be materialized: walked as a root of its own in this same pass, so
  // a chain of nested violations (one per residual layer) needs one pass, not one per link
  const m = new Set(mat)
  const extraRoots: Eqn[] = []
  const materialize = (id: number) => {
    out.push(id)
    if (m.has(id)) return
    m.add(id)
    const d = defs.get(id)
    if (d) extraRoots.push(d)
  }
  const hasRed = new Map<number, boolean>()
  const inlined = (v: Var, root: Eqn) => !isInput.has(v.id) && (!m.has(v.id) || defs.get(v.id) === root)
  const containsRed = (v: Var, root: Eqn): boolean => {
    if (!inlined(v, root)) return false
    const got = hasRed.get(v.id)
    if (got !== undefined) return got
    const e = defs.get(v.id)!
    const r = isReduction(e) || e.inputs.some((u) => containsRed(u, root))
    hasRed.set(v.id, r)
    return r
  }
  const visitRoot = (root: Eqn): void => {
    hasRed.clear()
    const reds: { v: Var; size: number; via: boolean }[] = []
    const seen = new Set<string>()
    const walk = (v: Var, via: boolean) => {
      if (!inlined(v, root)) return
      const key = `${v.id}:${via}`
      if (seen.has(key)) return
      seen.add(key)
      const e = defs.get(v.id)!
      if (isReduction(e)) {
        reds.push({ v, size: loopLength(e), via })
        const dot = nearArgmins.get(e)
        // a nearest-code argmin keeps its distances inline, their dot product as a nested loop
        if (dot) nestedOperand(e.inputs[0]!, dot)
        // a reduction's operand holding another reduction would nest loops: materialize the
        // operand, or, where it is too large to store, nest the reductions inside it
        else for (const u of e.inputs) if (containsRed(u, root)) (huge(u) ? nestInside(u) : materialize(u.id))
      } else if (isElementwise(e) || e.prim === 'reshape' || e.prim === 'stop_gradient' || e.prim === 'cast') {
        for (const u of e.inputs) walk(u, via)
      } else if (e.prim === 'broadcast') {
        walk(e.inputs[0]!, true)
      } else {
        for (const u of e.inputs) if (containsRed(u, root)) materialize(u.id)
      }
    }
    /** Inside an argmin's loop: its dot product nests; any other reduction is materialized. */
    const nestedOperand = (v: Var, dot: Eqn): void => {
      if (!inlined(v, root) || seen.has(`${v.id}:n`)) return
      seen.add(`${v.id}:n`)
      const e = defs.get(v.id)!
      if (e === dot) {
        for (const u of e.inputs) if (containsRed(u, root)) materialize(u.id)
      } else if (isReduction(e)) materialize(v.id)
      else for (const u of e.inputs) nestedOperand(u, dot)
    }
    /** Inside a loop, in a value too large to store: large reductions nest (one level), small ones get buffers. */
    let nestedSize: number | undefined
    const nestInside = (v: Var): void => {
      if (!inlined(v, root) || seen.has(`${v.id}:h`)) return
      seen.add(`${v.id}:h`)
      const e = defs.get(v.id)!
      if (!isReduction(e)) {
        for (const u of e.inputs) nestInside(u)
        return
      }
      if (!huge(v)) return materialize(v.id)
      const size = loopLength(e)
      if (nestedSize !== undefined && nestedSize !== size)
        throw new TesseraError('backend', 'lower', `${e.prim} producing ${fmtAval(v.aval)} would nest a loop of ${size} beside one of ${nestedSize}; values this large must be computed in one kernel`)
      nestedSize = size
      nested.add(e)
      for (const u of e.inputs)
        if (containsRed(u, root)) {
          if (huge(u)) throw new TesseraError('backend', 'lower', `${fmtAval(u.aval)} is too large to store and would nest loops three deep`)
          materialize(u.id)
        }
    }
    walk(root.out, false)
    const direct = reds.find((r) => !r.via)
    for (const r of reds) if (!direct || r.size !== direct.size) materialize(r.v.id)
  }
  const kernelRoot = (e: Eqn) => e.prim !== 'constant' && e.prim !== 'random_uniform' && !onHost.has(e.out.id)
  for (const root of eqns) if (mat.has(root.out.id) && kernelRoot(root)) visitRoot(root)
  while (extraRoots.length > 0) {
    const root = extraRoots.pop()!
    if (kernelRoot(root)) visitRoot(root)
  }
  return out
}

function loopLength(e: Eqn): number {
  const s = e.inputs[0]!.aval.shape
  if (e.prim === 'matmul') return s[s.length - 1]!
  if (e.prim === 'argmin' || e.prim === 'argmax') return s[e.params.axis]!
  if (e.prim === 'reduce_sum' || e.prim === 'reduce_max' || e.prim === 'reduce_min') return e.params.axes.reduce((a, j) => a * s[j]!, 1)
  return 0
}

/** Buffers a kernel rooted at `root` reads, and the inlined values it contains. */
function kernelLeaves(root: Eqn, mat: Set<number>, isInput: Set<number>, defs: Map<number, Eqn>) {
  const leaves = new Map<number, Set<number>>()
  const walk = (v: Var): Set<number> => {
    const got = leaves.get(v.id)
    if (got) return got
    const s = new Set<number>()
    const e = defs.get(v.id)
    if (isInput.has(v.id) || (mat.has(v.id) && e !== root) || !e) s.add(v.id)
    else for (const u of e.inputs) for (const x of walk(u)) s.add(x)
    leaves.set(v.id, s)
    return s
  }
  walk(root.out)
  return leaves
}

/**
 * For each kernel reading more buffers than `caps.maxKernelArgs`, the inlined value whose
 * materialization removes the most of them (kernels are split independently: such a value
 * belongs to one kernel only, else it would already be materialized).
 */
export function splitWide(
  eqns: readonly Eqn[],
  mat: Set<number>,
  isInput: Set<number>,
  defs: Map<number, Eqn>,
  caps: Caps,
  onHost: ReadonlySet<number>,
): number[] {
  const splits: number[] = []
  for (const e of eqns) {
    if (!mat.has(e.out.id) || e.prim === 'constant' || e.prim === 'random_uniform' || onHost.has(e.out.id)) continue
    const leaves = kernelLeaves(e, mat, isInput, defs)
    const total = leaves.get(e.out.id)!.size
    if (total <= caps.maxKernelArgs) continue
    // the largest inlined value whose own kernel fits (so one split per chunk of a long sum, not
    // one per term); failing that, the largest below the whole
    let best: number | undefined
    let bestSize = 1
    let fitting: number | undefined
    let fittingSize = 1
    for (const [v, s] of leaves) {
      if (v === e.out.id || mat.has(v) || isInput.has(v)) continue
      if (s.size > bestSize && s.size < total + 1) {
        best = v
        bestSize = s.size
      }
      if (s.size > fittingSize && s.size <= caps.maxKernelArgs) {
        fitting = v
        fittingSize = s.size
      }
    }
    if (fitting !== undefined) best = fitting
    if (best === undefined)
      throw new TesseraError(
        'backend',
        'lower',
        `${e.prim} producing ${fmtAval(e.out.aval)} reads ${total} buffers directly; this backend allows ${caps.maxKernelArgs} per kernel`,
      )
    splits.push(best)
  }
  return splits
}

/** Largest value (elements) key arithmetic may compute on the host. */
const HOST_MAX = 4096

/**
 * The equations that derive random keys, to be evaluated on the host: the backward slice of each
 * `random_uniform`'s key operand, when it is computed from program inputs and constants only
 * (folding a tag into a key adds large int32 constants with wrap-around, exact on the host and
 * not in float32). A key computed from anything larger, or from a random draw, stays on the device.
 */
export function hostKeySlices(eqns: readonly Eqn[], defs: Map<number, Eqn>, isInput: Set<number>): Set<number> {
  const memo = new Map<number, boolean>()
  const hostable = (v: Var): boolean => {
    if (isInput.has(v.id)) return true
    const got = memo.get(v.id)
    if (got !== undefined) return got
    const d = defs.get(v.id)!
    const ok = d.prim === 'constant' || (d.prim !== 'random_uniform' && sizeOf(v.aval.shape) <= HOST_MAX && d.inputs.every(hostable))
    memo.set(v.id, ok)
    return ok
  }
  const out = new Set<number>()
  const mark = (v: Var): void => {
    const d = defs.get(v.id)
    if (!d || d.prim === 'constant' || out.has(v.id)) return
    out.add(v.id)
    d.inputs.forEach(mark)
  }
  for (const e of eqns) if (e.prim === 'random_uniform' && hostable(e.inputs[0]!)) mark(e.inputs[0]!)
  return out
}
