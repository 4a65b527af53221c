import { afterAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import * as E from 'fp-ts/lib/Either.js'
import type { Aval, Backend, Caps, HostTensor, Program, Tensor } from '@tessera/core'
import { grad, printProgram, random, run, tensorOf, traceOrThrow, vjp } from '@tessera/core'
import type { RandomProgramCase } from '@tessera/core/testing'
import { buildNode, randomProgramArb, randomProgramTolerance } from '@tessera/core/testing'
import { cpuBackend, fusedCpuBackend, interpretProgram } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { kinkMargin } from '../../core/test/autodiff-f64.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { fsq } from '../src/fsq/fsq.js'
import type { QuantizeResult } from '../src/quantizer.js'
import { orThrow, randn } from './helpers.js'
import { gradRun } from './grad-helpers.js'
import type { Lane } from './lanes.js'
import { gpuJsLane } from './lanes.js'

/**
 * Gradients agree across backends (issue 5): the gradient programs that `vjp` and `grad` build
 * from random programs (the conformance generator's DAGs) run on every backend and are compared
 * with the CPU reference interpreter, within the backend's caps as the conformance suite's random
 * programs are: `randomProgramTolerance(caps, equations)` per element, here relative to the
 * largest element of each gradient (gradients are not bounded to [-4, 4] as forward values are).
 * With the reference's caps (all zero: the fused CPU plan) that is exact agreement.
 *
 * A gradient program branches on its forward values (which side of a max, the sign under abs):
 * where a forward value lies within rounding of such a kink, a backend's last-ulp difference may
 * take the other branch, which is no disagreement about gradients. Draws whose float64 forward
 * evaluation comes within 1e-3 of a kink without sitting on it are skipped (exact ties, such as
 * max(x, x) or |0|, are computed exactly by every backend and stay in).
 */

const reference = cpuBackend()
const perOp = (caps: Caps) => caps.atol + caps.rtol + caps.transcendentalRtol
/** Ops' worth of per-op error allowed in a quantizer's gradient, relative to its largest element. */
const QUANTIZER_OPS = 64

// gpu.js compiles are slow (headlessgl most): fewer random programs there
const lanes: readonly (Lane & { readonly numRuns: number })[] = [
  { name: 'cpu-fused', numRuns: 50, make: async () => fusedCpuBackend() },
  { name: 'fast-js', numRuns: 50, make: async () => fastBackend({ wasm: false }) },
  { name: 'fast-wasm', numRuns: 50, make: async () => fastBackend({ threads: 1 }) },
  { ...gpuJsLane('cpu'), numRuns: 20 },
  { ...gpuJsLane('webasm'), numRuns: 12 },
  { ...gpuJsLane('headlessgl'), numRuns: 6 },
]

/** A random program, its scalar objective Σ_k sum(c_k · out_k), and cotangents for its vjp. */
interface GradCase {
  readonly base: RandomProgramCase
  readonly vjpProgram: Program
  readonly vjpInputs: readonly HostTensor[]
  readonly gradProgram: Program
}

const ctArb = (n: number) => fc.array(fc.double({ min: -1, max: 1, noNaN: true }).map(Math.fround), { minLength: n, maxLength: n })

const gradCaseArb: fc.Arbitrary<GradCase> = randomProgramArb.chain((base) => {
  const [m, n] = base.inputs[0]!.shape as [number, number]
  return fc.array(ctArb(m * n), { minLength: base.roots.length, maxLength: base.roots.length }).map((cts): GradCase => {
    const ctTensors = cts.map((c) => tensorOf(c, [m, n]))
    const { program: objective } = traceOrThrow([base.inputs[0]!, base.inputs[1]!, ...ctTensors], (a, b, ...cs) =>
      base.roots.map((r, k) => buildNode(r, [a, b]).mul(cs[k]!).sum()).reduce((s, t) => s.add(t)),
    )
    return {
      base,
      vjpProgram: vjp(base.program),
      vjpInputs: [...base.inputs, ...ctTensors],
      // d objective / d (x, y): the same cotangents, through `grad`'s scalar seed
      gradProgram: grad(objective, [0, 1]),
    }
  })
})

/** Not within 1e-3 of a kink of the forward program (exact ties allowed: see above). */
function awayFromKinks(c: GradCase): boolean {
  const m = kinkMargin(c.base.program, c.base.inputs.map((t) => ({ shape: t.shape, data: Float64Array.from(t.data) })))
  return m === 0 || m > 1e-3
}

/** The largest |err| / tolerance seen per lane, printed after its tests (how much room the tolerance leaves). */
const worstRatio = new Map<string, number>()
const note = (lane: string, err: number, tol: number) => {
  const r = err === 0 ? 0 : err / tol
  if (!(r <= (worstRatio.get(lane) ?? 0))) worstRatio.set(lane, r)
}

function compare(got: readonly HostTensor[], want: readonly HostTensor[], caps: Caps, eqns: number, what: string, lane: string): string | null {
  if (got.length !== want.length) return `${what}: ${got.length} outputs, want ${want.length}`
  const perOp = randomProgramTolerance(caps, eqns)
  for (let o = 0; o < want.length; o++) {
    const g = got[o]!.data, w = want[o]!.data
    if (g.length !== w.length) return `${what} output ${o}: ${g.length} elements, want ${w.length}`
    const finite = Array.from(w).filter(Number.isFinite)
    const scale = Math.max(1, ...finite.map(Math.abs))
    for (let i = 0; i < w.length; i++) {
      const wv = w[i]!, gv = g[i]!
      if (!Number.isFinite(wv)) {
        if (caps.strictNaN && !Object.is(gv, wv) && !(Number.isNaN(gv) && Number.isNaN(wv))) return `${what} output ${o}[${i}]: got ${gv}, want ${wv} (strictNaN)`
        continue
      }
      const err = Math.abs(gv - wv)
      note(lane, err, perOp * scale)
      if (!(err <= perOp * scale)) return `${what} output ${o}[${i}]: got ${gv}, want ${wv}, |err| ${err.toExponential(2)} > ${(perOp * scale).toExponential(2)}`
    }
  }
  return null
}

async function runBoth(backend: Backend, program: Program, inputs: readonly HostTensor[], what: string): Promise<string | null> {
  const want = interpretProgram(program, inputs)
  const got = await run(program, inputs, backend)
  if (E.isLeft(got)) return `${what} failed on ${backend.name}: ${got.left.message}`
  return compare(got.right, want, backend.caps, program.eqns.length, what, backend.name)
}

for (const lane of lanes) {
  describe(`gradients on ${lane.name} vs the CPU reference`, async () => {
    const made = await lane.make()
    if ('skip' in made) {
      console.warn(`[gradients-backends] ${lane.name} is SKIPPED: ${made.skip}`)
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      return
    }
    const backend = made
    afterAll(() => {
      console.info(`[gradients-backends] ${lane.name}: worst |err|/tolerance ${(worstRatio.get(backend.name) ?? 0).toExponential(2)}, quantizers ${(worstRatio.get(`${backend.name}/quantizers`) ?? 0).toExponential(2)}`)
      backend.dispose?.()
    })

    it(`vjp and grad programs of random programs agree (${lane.numRuns} runs)`, async () => {
      await fc.assert(
        fc.asyncProperty(gradCaseArb, async (c) => {
          fc.pre(awayFromKinks(c))
          for (const [what, program, inputs] of [
            ['vjp', c.vjpProgram, c.vjpInputs],
            ['grad', c.gradProgram, c.vjpInputs],
          ] as const) {
            const bad = await runBoth(backend, program, inputs, what)
            if (bad) throw new Error(`${bad}\nforward program:\n${printProgram(c.base.program)}\ninputs: ${c.vjpInputs.map((t) => JSON.stringify(Array.from(t.data))).join(' ')}`)
          }
        }),
        { numRuns: lane.numRuns },
      )
    }, 240_000)

    it('regression: values a reduction reads through a transpose (vjp of min over transpose(exp(tanh x)))', async () => {
      // backend-fast's multi-output fusion computed exp(tanh x) inside the min's loop while the
      // min read it, transposed, from the not yet written buffer: the output was 0 and the gradient NaN
      const { program } = traceOrThrow([{ shape: [3, 3], dtype: 'float32' } as Aval], (x) => [x.tanh().exp().transpose().min(1, true)])
      const inputs = [tensorOf([0.3, -1, 0, 2, 0.5, -0.25, 1.5, -2, 0.75], [3, 3]), tensorOf([0.5, -1, 2], [3, 1])]
      const bad = await runBoth(backend, vjp(program), inputs, 'vjp')
      expect(bad).toBeNull()
    })

    it('quantizer gradients (VectorQuantize rotation trick with a learnable codebook, FSQ bound) agree', async () => {
      const vq = orThrow(vectorQuantize({ dim: 4, codebook_size: 8, rotation_trick: true, learnable_codebook: true, ema_update: false }))
      const f = orThrow(fsq({ levels: [8, 5, 5, 3] }))
      const opts = { training: true, objective: (r: QuantizeResult, wt: Tensor) => r.quantized.mul(wt).sum().add(r.loss) }
      for (const [q, seed] of [[vq, 1], [f, 2]] as const) {
        const init = q.init(random.keyFromSeed(seed))
        const x = randn([2, 5, 4], seed + 10)
        const w = randn([2, 5, 4], seed + 20)
        const want = await gradRun(reference, q, init, x, w, opts)
        const got = await gradRun(backend, q, init, x, w, opts)
        expect(Array.from(got.indices.data)).toEqual(Array.from(want.indices.data))
        const gs = [got.gx, ...Object.values(got.gparams)], ws = [want.gx, ...Object.values(want.gparams)]
        ws.forEach((wt, k) => {
          const scale = Math.max(1, ...Array.from(wt.data, Math.abs))
          const tol = QUANTIZER_OPS * perOp(backend.caps) * scale
          wt.data.forEach((v, i) => {
            const err = Math.abs(gs[k]!.data[i]! - v)
            note(`${backend.name}/quantizers`, err, tol)
            expect(err, `${q.kind} gradient ${k}[${i}]`).toBeLessThanOrEqual(tol)
          })
        })
      }
    })
  })
}
