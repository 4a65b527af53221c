import type { Eqn } from '../program.js'
import type { AnyTypedArray, DType, Shape } from '../dtype.js'
import { dtypeShort, fmtShape } from '../dtype.js'
import type { Kernel } from './kernel.js'
import { printKernel } from './kernel.js'

/** Where a buffer's contents come from. */
export type BufferKind = 'input' | 'const' | 'temp'

export interface PlanBuffer {
  readonly id: number
  readonly shape: Shape
  readonly dtype: DType
  readonly size: number
  readonly kind: BufferKind
  /** data of a `const` buffer (uploaded once, at compile time) */
  readonly data?: AnyTypedArray
  /**
   * An output too large for one buffer: the buffers holding consecutive slices of its first
   * axis, in order. The backend joins them on the host; this buffer itself is never written.
   */
  readonly parts?: readonly number[]
}

/**
 * One step of a plan. `alloc` comes before the step that writes a buffer, `free` right after the
 * last step that reads it. `random` draws `random_uniform` on the host from a key buffer, and
 * `host` evaluates one equation on the host with the reference evaluator: the arithmetic that
 * derives random keys (folding a tag into a key) needs exact 32-bit integers, which float-only
 * GPUs lack, and touches a few elements.
 */
export type Step =
  | { readonly k: 'alloc'; readonly buf: number }
  | { readonly k: 'kernel'; readonly kernel: Kernel }
  | { readonly k: 'random'; readonly key: number; readonly out: number }
  | { readonly k: 'host'; readonly eqn: Eqn; readonly ins: readonly number[]; readonly out: number }
  | { readonly k: 'free'; readonly buf: number }

export interface Plan {
  readonly buffers: readonly PlanBuffer[]
  readonly inputs: readonly number[]
  readonly outputs: readonly number[]
  readonly steps: readonly Step[]
  /** input buffers used as gather indices: a backend that cannot check them in kernels checks them on the host */
  readonly gatherIndexInputs: readonly { readonly buf: number; readonly bound: number; readonly axis: number }[]
}

export const planKernels = (p: Plan): Kernel[] =>
  p.steps.flatMap((s) => (s.k === 'kernel' ? [s.kernel] : []))

/** A readable print of a plan, pinned in tests. */
export function printPlan(p: Plan): string {
  const name = (b: number) => `b${b}`
  const decl = (b: PlanBuffer) => `${name(b.id)}:${dtypeShort[b.dtype]}${fmtShape(b.shape)}`
  const lines: string[] = []
  lines.push(`plan (${p.inputs.map((b) => decl(p.buffers[b]!)).join(', ')}) {`)
  for (const b of p.buffers) if (b.kind === 'const') lines.push(`  const ${decl(b)}`)
  for (const s of p.steps) {
    switch (s.k) {
      case 'alloc':
        lines.push(`  alloc ${decl(p.buffers[s.buf]!)}`)
        break
      case 'free':
        lines.push(`  free ${name(s.buf)}`)
        break
      case 'random':
        lines.push(`  ${name(s.out)} = random_uniform ${name(s.key)}  # on the host`)
        break
      case 'host':
        lines.push(`  ${name(s.out)} = ${s.eqn.prim} ${s.ins.map(name).join(' ')}  # on the host`)
        break
      case 'kernel':
        lines.push(`  ${name(s.kernel.out)} = kernel(${s.kernel.args.map(name).join(', ')}) {`)
        lines.push(printKernel(s.kernel, name).replace(/^/gm, '  '))
        lines.push('  }')
        break
    }
  }
  lines.push(`  out (${p.outputs.map(name).join(', ')})`)
  lines.push('}')
  return lines.join('\n')
}
