import type { Eqn, Program, Var } from '../../program.js'
import type { Prim } from '../../prim.js'
import { primKind } from '../../prim.js'

/**
 * Who defines and who reads each variable of a program: what every planning pass asks first.
 * Only live equations (those an output depends on) count as readers, so dead code never keeps
 * a value stored or a pattern from matching.
 */
export class ProgramGraph {
  private readonly defs = new Map<number, Eqn>()
  private readonly readers = new Map<number, Eqn[]>()
  private readonly position = new Map<number, number>()
  private readonly inputIds: ReadonlySet<number>
  private readonly outputIds: ReadonlySet<number>
  private readonly liveIds = new Set<number>()

  constructor(readonly program: Program) {
    program.eqns.forEach((e, k) => {
      this.defs.set(e.out.id, e)
      this.position.set(e.out.id, k)
    })
    this.inputIds = new Set(program.inputs.map((v) => v.id))
    this.outputIds = new Set(program.outputs.map((v) => v.id))
    for (const v of program.outputs) this.liveIds.add(v.id)
    for (let k = program.eqns.length - 1; k >= 0; k--) {
      const e = program.eqns[k]!
      if (this.liveIds.has(e.out.id)) for (const v of e.inputs) this.liveIds.add(v.id)
    }
    for (const e of program.eqns) {
      if (!this.liveIds.has(e.out.id)) continue
      for (const v of e.inputs) {
        const u = this.readers.get(v.id)
        if (u) u.push(e)
        else this.readers.set(v.id, [e])
      }
    }
  }

  /** Whether an output depends on `v`. */
  isLive(v: Var): boolean {
    return this.liveIds.has(v.id)
  }

  /** The equation that defines `v` (program inputs have none). */
  def(v: Var): Eqn | undefined {
    return this.defs.get(v.id)
  }
  defById(id: number): Eqn | undefined {
    return this.defs.get(id)
  }
  /** Live equations that read `v`, in program order, once per operand (`mul(x, x)` reads x twice). */
  uses(v: Var): readonly Eqn[] {
    return this.readers.get(v.id) ?? []
  }
  isInput(v: Var): boolean {
    return this.inputIds.has(v.id)
  }
  isOutput(v: Var): boolean {
    return this.outputIds.has(v.id)
  }
  /** Index of the equation defining `v` in program order (-1 for inputs). */
  orderOf(v: Var): number {
    return this.position.get(v.id) ?? -1
  }
}

export const sizeOfVar = (v: Var): number => v.aval.shape.reduce((a, b) => a * b, 1)

/** Primitives that are pure index remaps of one operand (read through, never stored for their own sake). */
export const isRemap = (p: Prim): boolean => primKind[p] === 'movement' && p !== 'pad' && p !== 'concat'

/** Primitives computed per element from same-index operands: they fuse into any loop, row blocks included. */
export const isElementwise = (p: Prim): boolean => {
  const k = primKind[p]
  return k === 'unary' || k === 'binary' || k === 'ternary'
}
