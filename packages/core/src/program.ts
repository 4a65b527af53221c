import * as E from 'fp-ts/lib/Either.js'
import type { Aval } from './dtype.js'
import { fmtAval, shapeEq } from './dtype.js'
import { TesseraError, asTesseraError } from './error.js'
import type { Prim, PrimParams } from './prim.js'
import { evalAval } from './prim.js'

/** A variable of a program: defined once (an input or one equation's output). */
export interface Var {
  readonly id: number
  readonly aval: Aval
}

/** One equation in A-normal form: `out = prim[params](inputs...)`. */
export type Eqn = { readonly [P in Prim]: EqnOf<P> }[Prim]

export interface EqnOf<P extends Prim> {
  readonly prim: P
  readonly params: PrimParams[P]
  readonly inputs: readonly Var[]
  readonly out: Var
}

/** An immutable program: inputs, equations in dependency order, outputs. */
export interface Program {
  readonly inputs: readonly Var[]
  readonly eqns: readonly Eqn[]
  readonly outputs: readonly Var[]
}

export function makeProgram(inputs: readonly Var[], eqns: readonly Eqn[], outputs: readonly Var[]): Program {
  return Object.freeze({
    inputs: Object.freeze([...inputs]),
    eqns: Object.freeze(eqns.map((e) => Object.freeze({ ...e, inputs: Object.freeze([...e.inputs]) }) as Eqn)),
    outputs: Object.freeze([...outputs]),
  })
}

/** Names variables a, b, ..., z, ba, bb, ... in order of definition, as jaxprs print. */
function varName(n: number): string {
  let s = ''
  do {
    s = String.fromCharCode(97 + (n % 26)) + s
    n = Math.floor(n / 26)
  } while (n > 0)
  return s
}

function fmtParam(v: unknown, full: boolean): string {
  if (ArrayBuffer.isView(v)) {
    const arr = Array.from(v as unknown as ArrayLike<number>)
    if (full || arr.length <= 8) return `[${arr.join(',')}]`
    return `[${arr.slice(0, 4).join(',')},…(${arr.length})]`
  }
  if (typeof v === 'number') return Object.is(v, -0) ? '-0' : String(v)
  return JSON.stringify(v)
}

function fmtParams(params: object, full: boolean): string {
  const keys = Object.keys(params).sort()
  if (keys.length === 0) return ''
  return `[${keys.map((k) => `${k}=${fmtParam((params as Record<string, unknown>)[k], full)}`).join(' ')}]`
}

/**
 * A readable print of a program, like a jaxpr. Variable names are assigned in order of
 * definition, so two programs with the same structure print the same text.
 * `full` prints constant data in full (used by the structural hash).
 */
export function printProgram(p: Program, opts: { full?: boolean } = {}): string {
  const names = new Map<number, string>()
  let n = 0
  const def = (v: Var) => {
    const nm = varName(n++)
    names.set(v.id, nm)
    return `${nm}:${fmtAval(v.aval)}`
  }
  const use = (v: Var) => names.get(v.id) ?? `?${v.id}`
  const lines: string[] = []
  lines.push(`{ lambda ${p.inputs.map(def).join(' ')} .`)
  for (const e of p.eqns) {
    const rhs = `${e.prim}${fmtParams(e.params, opts.full ?? false)} ${e.inputs.map(use).join(' ')}`.trimEnd()
    lines.push(`  ${def(e.out)} = ${rhs}`)
  }
  lines.push(`  in (${p.outputs.map(use).join(', ')}) }`)
  return lines.join('\n')
}

/** cyrb53: a fast 53-bit string hash; enough for cache keys with the text kept alongside. */
function cyrb53(str: string, seed = 0): number {
  let h1 = 0xdeadbeef ^ seed
  let h2 = 0x41c6ce57 ^ seed
  for (let i = 0; i < str.length; i++) {
    const ch = str.charCodeAt(i)
    h1 = Math.imul(h1 ^ ch, 2654435761)
    h2 = Math.imul(h2 ^ ch, 1597334677)
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return 4294967296 * (2097151 & h2) + (h1 >>> 0)
}

/** Structural hash: equal for programs that differ only in variable ids. */
export function hashProgram(p: Program): string {
  return cyrb53(printProgram(p, { full: true })).toString(16).padStart(14, '0')
}

/**
 * Re-check a whole program: every variable is defined once before use, and every equation's
 * recorded output matches its primitive's shape rule. Passes (constant folding, CSE, grad)
 * must keep this true.
 */
export function typecheck(p: Program): E.Either<TesseraError, Program> {
  const defined = new Set<number>()
  const define = (v: Var, where: string) => {
    if (defined.has(v.id)) throw new TesseraError('param', 'typecheck', `variable ${v.id} is defined twice (${where})`)
    defined.add(v.id)
  }
  try {
    p.inputs.forEach((v, i) => define(v, `input ${i}`))
    p.eqns.forEach((e, k) => {
      e.inputs.forEach((v) => {
        if (!defined.has(v.id))
          throw new TesseraError('param', 'typecheck', `equation ${k} (${e.prim}) uses variable ${v.id} before it is defined`)
      })
      let aval
      try {
        aval = evalAval(e.prim, e.inputs.map((v) => v.aval), e.params as never)
      } catch (err) {
        // keep the op's own kind and name, and say which equation broke
        if (err instanceof TesseraError)
          throw new TesseraError(err.kind, err.where, `${err.message.slice(err.where.length + 2)} (equation ${k})`)
        throw err
      }
      if (aval.dtype !== e.out.aval.dtype || !shapeEq(aval.shape, e.out.aval.shape))
        throw new TesseraError(
          'shape',
          'typecheck',
          `equation ${k} (${e.prim}) records ${fmtAval(e.out.aval)} but its rule gives ${fmtAval(aval)}`,
        )
      define(e.out, `equation ${k}`)
    })
    p.outputs.forEach((v, i) => {
      if (!defined.has(v.id)) throw new TesseraError('param', 'typecheck', `output ${i} is never defined`)
    })
    return E.right(p)
  } catch (e) {
    return E.left(asTesseraError(e, 'typecheck'))
  }
}
