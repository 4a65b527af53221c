/**
 * The measurement behind `gpuJsCaps` (run by measure-error.ts in Node and by
 * test/measure-error.browser.test.ts in Chromium): how far each gpu.js mode is from the reference, per primitive and on a few
 * quantizer-shaped programs, so the tolerances in `gpuJsCaps` are numbers, not guesses.
 *
 *   xvfb-run -a npx tsx --conditions=@tessera/source packages/backend-gpujs/scripts/measure-error.ts \
 *     [--modes cpu,webasm,headlessgl] [--runs 150] [--seed 20261122] [--json out.json]
 *
 * Inputs are the conformance suite's own generators (`primCases`, `randomProgramArb`), sampled
 * with a fixed seed. For each float output element the error is e = |got - want| and its scale
 * s = |want| (for sums and matmul: max(|want|, the same program on |inputs|), which is what the
 * suite's 'accumulate' tolerance uses). Reported per primitive:
 *   abs<1: worst e over elements with s < 1 (what atol must cover),
 *   rel>=1: worst e / s over elements with s >= 1 (what the relative term must cover),
 *   need: the smallest r with e <= atol + r * s for every element, at the given atol.
 * A tolerance atol = A, rtol = R then covers every element when A >= abs<1 and R >= rel>=1.
 * Integer and bool outputs must match exactly: any difference is counted as a mismatch.
 */
import fc from 'fast-check'
import type { Backend, HostTensor, Prim, Program, Tensor } from '@tessera/core'
import { allPrims, interpretProgram, printProgram, random, run, tensorOf, traceOrThrow, where } from '@tessera/core'
import type { ProgramCase, TolClass } from '@tessera/core/testing'
import { primCases, randomProgramArb, tolClassOf } from '@tessera/core/testing'

export interface Stat {
  cases: number
  elements: number
  mismatches: number
  failures: number
  absSmall: number
  relLarge: number
  absAll: number
  /** (e - atol) / s, worst; <= 0 when atol alone covers every element */
  need: number
  firstFailure?: string
  firstMismatch?: string
}
const emptyStat = (): Stat => ({ cases: 0, elements: 0, mismatches: 0, failures: 0, absSmall: 0, relLarge: 0, absAll: 0, need: 0 })

function accumulate(st: Stat, got: readonly HostTensor[], want: readonly HostTensor[], mag: readonly HostTensor[] | undefined, atol: number, exact = false) {
  st.cases++
  const mismatch = (o: number, i: number, gv: number, wv: number) => {
    st.mismatches++
    st.firstMismatch ??= `output ${o} element ${i}: got ${gv}, want ${wv}`
  }
  want.forEach((w, o) => {
    const g = got[o]!
    for (let i = 0; i < w.data.length; i++) {
      const wv = w.data[i]!, gv = g.data[i]!
      st.elements++
      if (w.dtype !== 'float32' || exact) {
        // exact classes: -0 and 0 count as equal, NaN must stay NaN
        if (gv !== wv && !(Number.isNaN(gv) && Number.isNaN(wv))) mismatch(o, i, gv, wv)
        continue
      }
      // NaN/Inf are not compared on gpu.js (caps.strictNaN = false)
      if (!Number.isFinite(wv)) continue
      const e = Math.abs(gv - wv)
      if (!Number.isFinite(e)) {
        mismatch(o, i, gv, wv)
        continue
      }
      const s = Math.max(Math.abs(wv), mag ? Math.abs(mag[o]!.data[i]!) : 0)
      st.absAll = Math.max(st.absAll, e)
      if (s < 1) st.absSmall = Math.max(st.absSmall, e)
      else st.relLarge = Math.max(st.relLarge, e / s)
      if (e > atol) st.need = Math.max(st.need, s > 0 ? (e - atol) / s : Infinity)
    }
  })
}

const absInput = (t: HostTensor): HostTensor => (t.dtype === 'float32' ? { ...t, data: (t.data as Float32Array).map(Math.abs) } : t)

async function measureCase(backend: Backend, st: Stat, c: ProgramCase, cls: TolClass, atol: number) {
  const magnitude = cls === 'accumulate'
  const want = interpretProgram(c.program, c.inputs)
  const got = await run(c.program, c.inputs, backend)
  if (got._tag === 'Left') {
    st.failures++
    st.firstFailure ??= got.left.message
    return
  }
  const mag = magnitude ? interpretProgram(c.program, c.inputs.map(absInput)) : undefined
  const before = st.mismatches
  accumulate(st, got.right, want, mag, atol, cls === 'exact')
  if (st.mismatches > before && st.firstMismatch && !st.firstMismatch.includes('\n')) st.firstMismatch += `\n${printProgram(c.program)}\ninputs: ${JSON.stringify(c.inputs.map((t) => Array.from(t.data as ArrayLike<number>)))}`
}

// ---- quantizer-shaped programs (written with core's tensor methods; the shapes of real use) ----

const randn = (shape: number[], s: number, scale = 1): HostTensor =>
  tensorOf(Array.from(random.normalHost(random.keyFromSeed(s), shape.reduce((a, b) => a * b, 1)), (v) => v * scale), shape)

interface Shaped {
  readonly name: string
  readonly program: Program
  readonly inputs: readonly HostTensor[]
  readonly outputs: readonly string[]
  /** index of an int32 argmin output whose flips are checked for near-ties, and the score output */
  readonly tie?: { readonly index: number; readonly scores: number }
}

function shapedPrograms(): Shaped[] {
  const out: Shaped[] = []
  // nearest-code search: |x|^2 - 2 x.c + |c|^2, argmin, gather (VectorQuantize euclidean)
  {
    const [n, d, k] = [256, 64, 512]
    const x = randn([n, d], 1), c = randn([k, d], 2)
    const { program } = traceOrThrow([x, c], (xs: Tensor, cs: Tensor) => {
      const dist = xs.square().sum(-1, true).sub(xs.matmul(cs.mT).mul(2)).add(cs.square().sum(-1).reshape([1, k]))
      const idx = dist.argmin(-1)
      return [dist, idx, cs.gather(idx, 0)]
    })
    out.push({ name: 'nearest-code (256x64 vs 512 codes)', program, inputs: [x, c], outputs: ['distances', 'argmin', 'gathered codes'], tie: { index: 1, scores: 0 } })
  }
  // cosine nearest code: l2-normalize both, argmax of similarity
  {
    const [n, d, k] = [256, 32, 256]
    const x = randn([n, d], 3), c = randn([k, d], 4)
    const { program } = traceOrThrow([x, c], (xs: Tensor, cs: Tensor) => {
      const xn = xs.div(xs.square().sum(-1, true).sqrt().maximum(1e-12))
      const cn = cs.div(cs.square().sum(-1, true).sqrt().maximum(1e-12))
      const sim = xn.matmul(cn.mT)
      return [sim.neg(), sim.argmax(-1)]
    })
    out.push({ name: 'cosine nearest-code (256x32 vs 256)', program, inputs: [x, c], outputs: ['-similarity', 'argmax'], tie: { index: 1, scores: 0 } })
  }
  // FSQ forward, levels [8,5,5,5] (even level: shifted tanh bound), then indices
  {
    const levels = [8, 5, 5, 5]
    const d = levels.length
    const x = randn([1024, d], 5, 2)
    const eps = 1e-3
    const halfL = levels.map((l) => ((l - 1) * (1 + eps)) / 2)
    const offset = levels.map((l) => (l % 2 === 0 ? 0.5 : 0))
    const shift = halfL.map((h, i) => Math.atanh(offset[i]! / h))
    const halfW = levels.map((l) => Math.floor(l / 2))
    const basis = levels.map((_, i) => levels.slice(0, i).reduce((a, b) => a * b, 1))
    const { program } = traceOrThrow([x], (xs: Tensor) => {
      const b = xs.builder
      const v = (a: number[]) => b.constant(a, [d])
      const bounded = xs.add(v(shift)).tanh().mul(v(halfL)).sub(v(offset))
      const codes = bounded.round().div(v(halfW))
      const idx = codes.mul(v(halfW)).add(v(halfW)).mul(v(basis)).sum(-1).round().cast('int32')
      return [bounded, codes, idx]
    })
    out.push({ name: 'FSQ forward (1024 x [8,5,5,5])', program, inputs: [x], outputs: ['bounded', 'codes', 'indices'] })
  }
  // LFQ forward with the entropy terms: bits, indices, softmax over -distance to every code
  {
    const [n, d] = [256, 10]
    const K = 2 ** d
    const x = randn([n, d], 6)
    const code = tensorOf(Array.from({ length: K * d }, (_, i) => ((Math.floor(i / d) >> (d - 1 - (i % d))) & 1 ? 1 : -1)), [K, d])
    const mask = tensorOf(Array.from({ length: d }, (_, j) => 2 ** (d - 1 - j)), [d], 'int32')
    const { program } = traceOrThrow([x, code, mask], (xs: Tensor, cb: Tensor, m: Tensor) => {
      const pos = xs.gt(0)
      const q = where(pos, 1, -1)
      const idx = where(pos, m, 0).sum(-1)
      const dist = xs.matmul(cb.mT).mul(-2).mul(-100) // -(-2 x.c) * inv_temperature
      const prob = dist.softmax(-1)
      const perSample = prob.neg().mul(prob.maximum(1e-5).log()).sum(-1).mean()
      const avg = prob.mean(0)
      const cbEntropy = avg.neg().mul(avg.maximum(1e-5).log()).sum()
      return [q, idx, prob, perSample, cbEntropy]
    })
    out.push({ name: 'LFQ forward + entropy (256 x 10 bits)', program, inputs: [x, code, mask], outputs: ['codes', 'indices', 'softmax(-dist*100)', 'per-sample entropy', 'codebook entropy'] })
  }
  // softmax + entropy over wide rows (VQ stochastic sampling / LFQ codebook entropy shape)
  {
    const x = randn([128, 1024], 7, 4)
    const { program } = traceOrThrow([x], (xs: Tensor) => {
      const p = xs.softmax(-1)
      const ent = p.neg().mul(p.maximum(1e-5).log()).sum(-1)
      return [p, ent, xs.logsumexp(-1)]
    })
    out.push({ name: 'softmax/entropy/logsumexp (128 x 1024)', program, inputs: [x], outputs: ['softmax', 'entropy', 'logsumexp'] })
  }
  return out
}

export interface ShapedStat extends Stat {
  /** argmin flips: the reference's best score vs its score of the backend's pick (relative gap) */
  worstFlipGap: number
  readonly perOutput: Record<string, Stat>
}

async function measureShaped(backend: Backend, p: Shaped, atol: number): Promise<ShapedStat> {
  const st: ShapedStat = { ...emptyStat(), worstFlipGap: 0, perOutput: {} }
  const want = interpretProgram(p.program, p.inputs)
  const got = await run(p.program, p.inputs, backend)
  if (got._tag === 'Left') {
    st.failures++
    st.firstFailure = got.left.message
    return st
  }
  accumulate(st, got.right, want, undefined, atol)
  p.outputs.forEach((name, o) => {
    const os = emptyStat()
    accumulate(os, [got.right[o]!], [want[o]!], undefined, atol)
    st.perOutput[name] = os
  })
  if (p.tie) {
    const wi = want[p.tie.index]!.data, gi = got.right[p.tie.index]!.data
    const sc = want[p.tie.scores]!
    const k = sc.shape[sc.shape.length - 1]!
    for (let r = 0; r < wi.length; r++)
      if (wi[r] !== gi[r]) {
        const a = sc.data[r * k + wi[r]!]!, b = sc.data[r * k + gi[r]!]!
        st.worstFlipGap = Math.max(st.worstFlipGap, Math.abs(a - b) / Math.max(1, Math.abs(a)))
      }
  }
  return st
}

const fmt = (v: number) => (v === 0 ? '0' : v.toExponential(1))

export interface MeasureOptions {
  readonly numRuns: number
  readonly seed: number
  /** measure only these primitives (the random and quantizer-shaped programs always run) */
  readonly onlyPrims?: ReadonlySet<string> | null
  /** one line of the markdown report */
  readonly log: (line: string) => void
}

export interface ModeReport {
  readonly perPrim: Partial<Record<Prim, Stat & { cls: TolClass }>>
  readonly randomPrograms: Stat & { worstPerEqn: number }
  readonly shaped: Record<string, ShapedStat>
  readonly summary: Record<string, unknown>
}

/** Measure one backend against the reference; `need` is computed at the backend's own atol. */
export async function measureBackend(backend: Backend, opts: MeasureOptions): Promise<ModeReport> {
  const { numRuns, seed, onlyPrims, log } = opts
  const caps = backend.caps
  const atol = caps.atol
  const mode = backend.name
  const cases = primCases(caps)
  const perPrim: Partial<Record<Prim, Stat & { cls: TolClass }>> = {}
  const t0 = Date.now()
  log(`\n## ${mode} (${numRuns} cases per primitive, seed ${seed}; need = rtol needed at atol ${atol})`)
  log('| primitive | class | elems | mismatches | abs<1 | rel>=1 | need |')
  log('|---|---|---|---|---|---|---|')
  for (const prim of allPrims) {
    if (onlyPrims && !onlyPrims.has(prim)) continue
    const cls = tolClassOf[prim]
    const st = { ...emptyStat(), cls }
    for (const c of fc.sample(cases[prim] as fc.Arbitrary<ProgramCase>, { numRuns, seed })) await measureCase(backend, st, c, cls, atol)
    perPrim[prim] = st
    if (st.firstMismatch) log(`first mismatch of ${prim}: ${st.firstMismatch}`)
    log(`| ${prim} | ${cls} | ${st.elements} | ${st.mismatches}${st.failures ? ` (${st.failures} failed runs: ${st.firstFailure})` : ''} | ${fmt(st.absSmall)} | ${fmt(st.relLarge)} | ${fmt(st.need)} |`)
  }
  // random programs: worst error per equation (the suite allows eqns * 64 * (atol + rtol + transcendentalRtol))
  const rp = { ...emptyStat(), worstPerEqn: 0 }
  for (const c of fc.sample(randomProgramArb, { numRuns, seed })) {
    const want = interpretProgram(c.program, c.inputs)
    const got = await run(c.program, c.inputs, backend)
    if (got._tag === 'Left') {
      rp.failures++
      rp.firstFailure ??= got.left.message
      continue
    }
    const before = rp.absAll
    rp.absAll = 0
    accumulate(rp, got.right, want, undefined, atol)
    rp.worstPerEqn = Math.max(rp.worstPerEqn, rp.absAll / Math.max(1, c.program.eqns.length))
    rp.absAll = Math.max(before, rp.absAll)
  }
  log(`random programs: ${rp.cases} programs, worst |err| ${fmt(rp.absAll)}, worst |err| per equation ${fmt(rp.worstPerEqn)}${rp.failures ? `, ${rp.failures} failed: ${rp.firstFailure}` : ''}`)
  const shaped: Record<string, ShapedStat> = {}
  log('\n| program | elems | int mismatches | abs<1 | rel>=1 | need | argmin flips: worst score gap |')
  log('|---|---|---|---|---|---|---|')
  for (const p of shapedPrograms()) {
    const st = await measureShaped(backend, p, atol)
    shaped[p.name] = st
    if (st.failures) log(`| ${p.name} | failed: ${st.firstFailure} |`)
    for (const [o, os] of Object.entries(st.perOutput))
      log(`| ${p.name}: ${o} | ${os.elements} | ${os.mismatches} | ${fmt(os.absSmall)} | ${fmt(os.relLarge)} | ${fmt(os.need)} | ${p.tie?.index === p.outputs.indexOf(o) ? fmt(st.worstFlipGap) : '-'} |`)
  }
  // what the per-class caps would have to be (worst over the primitives of the class)
  const worst = (cls: TolClass, f: (s: Stat) => number) =>
    Math.max(0, ...Object.values(perPrim).filter((s) => s!.cls === cls).map((s) => f(s!)))
  const absSmall = Math.max(worst('float', (s) => s.absSmall), worst('accumulate', (s) => s.absSmall), worst('transcendental', (s) => s.absSmall))
  const relFloat = Math.max(worst('float', (s) => s.relLarge), worst('accumulate', (s) => s.relLarge))
  const relTrans = worst('transcendental', (s) => s.relLarge)
  // the rule docs/BACKENDS.md states: twice the worst measured, rtol at least one float32 rounding
  const rtol = Math.max(2 * relFloat, 2 ** -24)
  const proposed = { atol: 2 * absSmall, rtol, transcendentalRtol: Math.max(0, 2 * relTrans - rtol) }
  const summary = {
    absSmall,
    relFloat,
    relTrans,
    exactMismatches: Object.values(perPrim).reduce((a, s) => a + s!.mismatches, 0),
    randomPerEqn: rp.worstPerEqn,
    proposed,
    current: { atol: caps.atol, rtol: caps.rtol, transcendentalRtol: caps.transcendentalRtol },
  }
  log(
    `\n${mode} summary: worst abs<1 ${fmt(absSmall)}; worst rel>=1 float+accumulate ${fmt(relFloat)}, transcendental ${fmt(relTrans)}; ` +
      `exact-class mismatches ${summary.exactMismatches}; random programs worst |err| per equation ${fmt(rp.worstPerEqn)} (${((Date.now() - t0) / 1000).toFixed(1)} s)\n` +
      `  caps by the rule (2x worst, rtol >= 2^-24): atol ${fmt(proposed.atol)}, rtol ${fmt(proposed.rtol)}, transcendentalRtol ${fmt(proposed.transcendentalRtol)}; ` +
      `caps now: atol ${fmt(caps.atol)}, rtol ${fmt(caps.rtol)}, transcendentalRtol ${fmt(caps.transcendentalRtol)}`,
  )
  return { perPrim, randomPrograms: rp, shaped, summary }
}
