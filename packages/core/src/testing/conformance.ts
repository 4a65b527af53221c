import fc from 'fast-check'
import * as E from 'fp-ts/lib/Either.js'
import { afterAll, describe, expect, test } from 'vitest'
import type { Backend } from '../backend.js'
import { run } from '../backend.js'
import { soloCollective } from '../distributed/collective.js'
import { runCollective } from '../distributed/runner.js'
import { interpretProgram } from '../eval/interpret.js'
import type { HostTensor } from '../host-tensor.js'
import type { Prim } from '../prim.js'
import { allPrims, primKind } from '../prim.js'
import type { Program } from '../program.js'
import { printProgram } from '../program.js'
import type { ProgramCase } from './arbitraries.js'
import type { Tolerance } from './compare.js'
import { compareOutputs, tolClassOf, toleranceFor } from './compare.js'
import { edgeCases } from './edge-cases.js'
import { primCases } from './prim-cases.js'
import { randomProgramArb, randomProgramTolerance } from './random-programs.js'

/**
 * The definition results are compared with: core's reference evaluator (`interpretProgram`)
 * unless a caller passes another (a mutant, in tests that show the suite catches one).
 */
export type Reference = (program: Program, inputs: readonly HostTensor[]) => HostTensor[] | Promise<HostTensor[]>

export interface ConformanceOptions {
  /** Default: core's `interpretProgram`. */
  readonly reference?: Reference
  /** Runs per property (each primitive, random programs). Default 40. */
  readonly numRuns?: number
  /** Primitives this backend does not run yet: their cases are registered as skipped, by name. */
  readonly exclude?: readonly Prim[]
  /** Pin fast-check's seed (failures print theirs, so this is for replaying one). */
  readonly seed?: number
  /** Per-test timeout in ms (a backend that compiles kernels may want more). */
  readonly timeout?: number
}

/** A backend, or the reason it cannot run here (that reason is printed; the tests show as skipped). */
export type MakeBackend = () => Promise<Backend | { readonly skip: string }>

const fmtTensor = (t: HostTensor) =>
  `${t.dtype}[${t.shape.join(',')}] ${t.data.length <= 64 ? JSON.stringify(Array.from(t.data as ArrayLike<number>)) : `(${t.data.length} elements)`}`

export const describeCase = (c: ProgramCase): string =>
  `${printProgram(c.program)}\ninputs:\n${c.inputs.map((t, i) => `  ${i}: ${fmtTensor(t)}`).join('\n')}`

/** |x| of float inputs: the reference run on these gives the magnitude of every sum's terms. */
const absInput = (t: HostTensor): HostTensor =>
  t.dtype === 'float32' ? { ...t, data: (t.data as Float32Array).map(Math.abs) } : t

/**
 * Run one case on the backend and the reference and throw a readable error on disagreement.
 * Exported so a backend's own tests can check single programs the same way.
 */
export async function checkAgainstReference(
  backend: Backend,
  reference: Reference,
  c: ProgramCase,
  tol: Tolerance,
  opts: { magnitude?: boolean } = {},
): Promise<void> {
  const want = await reference(c.program, c.inputs)
  const got = await run(c.program, c.inputs, backend)
  if (E.isLeft(got)) throw new Error(`${backend.name} failed: ${got.left.message}\n${describeCase(c)}`)
  const magnitude = opts.magnitude ? await reference(c.program, c.inputs.map(absInput)) : undefined
  const bad = compareOutputs(got.right, want, tol, { strictNaN: backend.caps.strictNaN, magnitude })
  if (bad) throw new Error(`${backend.name} disagrees with the reference: ${bad.message}\n${describeCase(c)}`)
}

/** An array of a tensor's class and size holding values no correct run leaves behind unwritten (NaN, -123456789, 7). */
export const garbageLike = (t: HostTensor): HostTensor => {
  const data = t.data.slice()
  data.fill(t.dtype === 'float32' ? NaN : t.dtype === 'int32' ? -123456789 : 7)
  return { shape: t.shape, dtype: t.dtype, data } as HostTensor
}

const sameValue = (a: number, b: number) => a === b || (Number.isNaN(a) && Number.isNaN(b))

/**
 * Runs a case twice on the backend, with fresh outputs and with every output written into an
 * array it is given (`into`, filled with garbage first), and throws unless the second run returns
 * those very arrays holding the first run's values, and left the inputs as they were.
 */
export async function checkRunInto(backend: Backend, c: ProgramCase): Promise<void> {
  const fresh = await run(c.program, c.inputs, backend)
  if (E.isLeft(fresh)) throw new Error(`${backend.name} failed: ${fresh.left.message}\n${describeCase(c)}`)
  const into = fresh.right.map(garbageLike)
  const before = c.inputs.map((t) => t.data.slice())
  const got = await run(c.program, c.inputs, backend, { into })
  if (E.isLeft(got)) throw new Error(`${backend.name} failed with into: ${got.left.message}\n${describeCase(c)}`)
  got.right.forEach((o, i) => {
    if (o.data !== into[i]!.data) throw new Error(`${backend.name}: output ${i} is not the array given as into[${i}]\n${describeCase(c)}`)
    const want = fresh.right[i]!.data
    for (let j = 0; j < want.length; j++)
      if (!sameValue(o.data[j]!, want[j]!)) throw new Error(`${backend.name}: output ${i} element ${j} written into a given array is ${o.data[j]}, fresh ${want[j]}\n${describeCase(c)}`)
  })
  c.inputs.forEach((t, i) => {
    if (t.data.some((v, j) => !sameValue(v, before[i]![j]!))) throw new Error(`${backend.name}: a run with into changed input ${i}\n${describeCase(c)}`)
  })
}

/**
 * Register the conformance suite for one backend: every primitive against the reference on
 * random inputs, random programs, and the hand-built edge cases. Call it at the top level of a
 * test file. A backend that is unavailable is reported as skipped (with the reason, printed),
 * never passed.
 */
export function describeConformance(label: string, makeBackend: MakeBackend, opts: ConformanceOptions = {}): void {
  const reference: Reference = opts.reference ?? interpretProgram
  const numRuns = opts.numRuns ?? 40
  const fcParams = { numRuns, ...(opts.seed === undefined ? {} : { seed: opts.seed }) }
  const excluded = new Set(opts.exclude ?? [])
  const timeout = opts.timeout

  describe(`conformance: ${label}`, async () => {
    const made = await makeBackend()
    if ('skip' in made) {
      console.warn(`[conformance] ${label} is SKIPPED: ${made.skip}`)
      test.skip(`${label} skipped: ${made.skip}`, () => {})
      for (const prim of allPrims) test.skip(`${prim} (skipped: ${made.skip})`, () => {})
      return
    }
    const backend: Backend = made
    afterAll(() => backend.dispose?.())
    const caps = backend.caps
    const cases = primCases(caps)

    describe('primitives', () => {
      test('every primitive has a conformance case', () => {
        expect(Object.keys(cases).sort()).toEqual([...allPrims].sort())
      })
      for (const prim of allPrims) {
        if (excluded.has(prim)) {
          test.skip(`${prim} (excluded by the caller)`, () => {})
          continue
        }
        if (primKind[prim] === 'collective') {
          test(`${prim} (a collective: refused by name; one rank gives its own value)`, async () => {
            await fc.assert(
              fc.asyncProperty(cases[prim] as fc.Arbitrary<ProgramCase>, async (c) => {
                const plain = await run(c.program, c.inputs, backend)
                expect(E.isLeft(plain) && plain.left.message.includes(prim), `${backend.name} must refuse ${prim} by name`).toBe(true)
                const solo = await runCollective(backend, c.program, c.inputs, soloCollective())
                if (E.isLeft(solo)) throw solo.left
                const want = prim === 'axis_index' ? [0] : Array.from(c.inputs[0]!.data as ArrayLike<number>)
                expect(Array.from(solo.right[0]!.data as ArrayLike<number>)).toEqual(want)
              }),
              fcParams,
            )
          }, timeout)
          continue
        }
        const cls = tolClassOf[prim]
        const tol = toleranceFor(cls, caps)
        test(
          prim,
          async () => {
            await fc.assert(
              fc.asyncProperty(cases[prim] as fc.Arbitrary<ProgramCase>, (c) =>
                checkAgainstReference(backend, reference, c, tol, { magnitude: cls === 'accumulate' }),
              ),
              fcParams,
            )
          },
          timeout,
        )
      }
    })

    describe('random programs', () => {
      test(
        'random DAGs agree with the reference',
        async () => {
          await fc.assert(
            fc.asyncProperty(randomProgramArb, async (c) => {
              fc.pre(!c.program.eqns.some((e) => excluded.has(e.prim)))
              const bound = randomProgramTolerance(caps, c.program.eqns.length)
              await checkAgainstReference(backend, reference, c, () => bound)
            }),
            fcParams,
          )
        },
        timeout,
      )
      test(
        'random DAGs write their outputs into given arrays (run option into) as they compute fresh ones',
        async () => {
          await fc.assert(
            fc.asyncProperty(randomProgramArb, async (c) => {
              fc.pre(!c.program.eqns.some((e) => excluded.has(e.prim)))
              await checkRunInto(backend, c)
            }),
            { ...fcParams, numRuns: Math.max(5, Math.ceil(numRuns / 4)) },
          )
        },
        timeout,
      )
    })

    describe('edge semantics', () => {
      for (const ec of edgeCases) {
        const prims = ec.build().program.eqns.map((e) => e.prim)
        const skipBecause = ec.needsStrictNaN && !caps.strictNaN
          ? 'caps.strictNaN is false'
          : prims.some((p) => excluded.has(p))
            ? 'uses an excluded primitive'
            : null
        if (skipBecause) {
          test.skip(`${ec.name} (skipped: ${skipBecause})`, () => {})
          continue
        }
        test(
          ec.name,
          async () => {
            const c = ec.build()
            const got = await run(c.program, c.inputs, backend)
            if (E.isLeft(got)) throw new Error(`${backend.name} failed: ${got.left.message}\n${describeCase(c)}`)
            const out = got.right[0]!
            expect(out.dtype).toBe(ec.wantDtype)
            const values = Array.from(out.data as ArrayLike<number>)
            expect(values.length).toBe(ec.want.length)
            // -0 and 0 count as equal; NaN must be NaN
            const same = (v: number, w: number) => v === w || (Number.isNaN(v) && Number.isNaN(w))
            values.forEach((v, i) => expect(same(v, ec.want[i]!), `element ${i}: got ${v}, want ${ec.want[i]}`).toBe(true))
            // and the reference agrees with the spec table
            const ref = Array.from((await reference(c.program, c.inputs))[0]!.data as ArrayLike<number>)
            ref.forEach((v, i) => expect(same(v, ec.want[i]!), `reference element ${i}: got ${v}, want ${ec.want[i]}`).toBe(true))
          },
          timeout,
        )
      }
    })
  })
}
