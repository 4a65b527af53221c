import { existsSync } from 'node:fs'
import { afterAll, describe, expect, it } from 'vitest'
import type { Caps, HostTensor } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { cpuBackend, fusedCpuBackend } from '@tessera/backend-cpu'
import { fsq, fsqConstants } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { residualFSQ, residualFSQScales } from '../src/residual/residual-fsq.js'
import { groupedResidualFSQ } from '../src/grouped/grouped-residual.js'
import type { HostApplyResult } from '../src/run.js'
import type { Init, Quantizer } from '../src/quantizer.js'
import { expectAsRecorded, goldenReports } from './golden-expected.js'
import { applyQ, decodeQ, goldenDir, orThrow } from './helpers.js'
import type { Lane } from './lanes.js'
import { gpuJsLane } from './lanes.js'

/**
 * Every quantizer on every backend (issue 4): the same apply on the CPU reference and on each
 * backend must give the same indices exactly and floats within a tolerance taken from the
 * backend's caps. Inputs are drawn away from decision boundaries (a rounding edge of FSQ, the sign
 * of LFQ, a near-tie between two codes of VQ/RVQ), with the margin computed on the host in float64
 * for every layer, so an index difference is a bug, never a legitimate tie.
 */

const f32 = Math.fround

/**
 * Float agreement for a whole quantizer program: OPS float ops' worth of the backend's per-op
 * tolerance (caps.atol + (rtol + transcendentalRtol) * max(1, |want|)). Measured: the worst output
 * over every case and backend is 2.5 ops' worth (a VectorQuantize cosine EMA step on gpujs-cpu),
 * so 8 leaves a 3x margin. With the reference's caps (all 0), as on the fused CPU plan, this is
 * exact agreement.
 */
const OPS = 8
const tolerance = (caps: Caps, want: number) => OPS * (caps.atol + (caps.rtol + caps.transcendentalRtol) * Math.max(1, Math.abs(want)))

/** Normal draws from a seed, as a stream: resampling takes the next one. */
function normals(seed: number, scale = 1): () => number {
  let pool: Float32Array = new Float32Array(0), at = 0, round = 0
  return () => {
    if (at >= pool.length) {
      pool = random.normalHost(random.keyFromSeed(seed * 1000 + round++), 4096)
      at = 0
    }
    return f32(pool[at++]! * scale)
  }
}

/** A float32 tensor whose elements (or rows of `d`) are drawn until `ok` accepts them. */
function drawRows(shape: readonly number[], d: number, next: () => number, ok: (row: number[]) => boolean): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1)
  const out: number[] = []
  for (let r = 0; r < n / d; r++) {
    for (let tries = 0; ; tries++) {
      if (tries > 1000) throw new Error('could not draw a row away from every decision boundary')
      const row = Array.from({ length: d }, next)
      if (ok(row)) {
        out.push(...row)
        break
      }
    }
  }
  return tensorOf(out, shape)
}

/** Distance of v from the nearest point of `lattice + k` (k integer). */
const distToLattice = (v: number, lattice: number) => {
  const f = v - lattice - Math.floor(v - lattice)
  return Math.min(f, 1 - f)
}

/** Decision margins (in level units) below this are redrawn: backend errors are ~1e-5 of a level at most. */
const LEVEL_MARGIN = 2e-3
/** Relative gap between the best and second-best code below this is redrawn. */
const CODE_MARGIN = 2e-3

/** FSQ (no projection): round(tanh(z + shift) * halfL - offset) rounds away from its .5 edges. */
function fsqElementOk(levels: readonly number[], preserve: boolean) {
  const c = fsqConstants({ levels, bound_hard_clamp: false })
  return (row: number[]) =>
    row.every((z, i) => {
      if (preserve) return distToLattice((Math.tanh(z) + 1) * (levels[i]! - 1) / 2 + 0.5, 0) >= LEVEL_MARGIN
      return distToLattice(Math.tanh(z + c.shift[i]!) * c.halfL[i]! - c.offset[i]!, 0.5) >= LEVEL_MARGIN
    })
}

/** ResidualFSQ (hard clamp, no projection): every layer's floor((clamp(res/s) + 1)(L-1)/2 + 1/2) away from integers. */
function residualFsqElementOk(levels: readonly number[], nq: number) {
  const scales = residualFSQScales(levels, nq)
  return (row: number[]) =>
    row.every((x, i) => {
      const L = levels[i]!
      const c = f32(1 + f32(1 / (L - 1)))
      let res = Math.tanh(x / c) * c
      for (let q = 0; q < nq; q++) {
        const s = scales[q]![i]!
        const t = Math.max(-1, Math.min(1, res / s))
        const v = ((t + 1) * (L - 1)) / 2 + 0.5
        if (distToLattice(v, 0) < LEVEL_MARGIN) return false
        res -= (Math.floor(v) * f32(2 / (L - 1)) - 1) * s
      }
      return true
    })
}

/** Nearest code of `x` in rows of `embed` (K x d), and whether the runner-up is clearly worse. */
function nearest(x: readonly number[], embed: ArrayLike<number>, K: number, cosine: boolean): { k: number; clear: boolean } {
  const d = x.length
  const xn = cosine ? Math.hypot(...x) : 1
  const scores: number[] = []
  for (let k = 0; k < K; k++) {
    let s = 0
    if (cosine) {
      let cn = 0
      for (let j = 0; j < d; j++) cn += embed[k * d + j]! ** 2
      for (let j = 0; j < d; j++) s -= (x[j]! / xn) * (embed[k * d + j]! / Math.sqrt(cn))
    } else for (let j = 0; j < d; j++) s += (x[j]! - embed[k * d + j]!) ** 2
    scores.push(s)
  }
  const order = scores.map((s, k) => [s, k] as const).sort((a, b) => a[0] - b[0])
  const [best, second] = [order[0]!, order[1]!]
  return { k: best[1], clear: second[0] - best[0] >= CODE_MARGIN * Math.max(1, Math.abs(best[0])) }
}

/** Residual VQ: every layer's nearest code is clear, following the residual in float64. */
function residualVqRowOk(embeds: readonly ArrayLike<number>[], K: number) {
  return (row: number[]) => {
    let res = [...row]
    for (const e of embeds) {
      const { k, clear } = nearest(res, e, K, false)
      if (!clear) return false
      res = res.map((v, j) => v - e[k * row.length + j]!)
    }
    return true
  }
}

interface Case {
  readonly name: string
  readonly q: Quantizer
  readonly init: Init
  readonly x: HostTensor
  readonly training: boolean
  /** Outputs whose absolute error the program multiplies (by name; default 1). */
  readonly amplify?: (output: string) => number
}

const B = 2, N = 16

function cases(): Case[] {
  const out: Case[] = []
  const add = (name: string, q: Quantizer, seed: number, x: (init: Init) => HostTensor, training = false, amplify?: (output: string) => number) => {
    const init = q.init(random.keyFromSeed(seed))
    out.push({ name, q, init, x: x(init), training, ...(amplify ? { amplify } : {}) })
  }
  {
    const levels = [8, 5, 5, 5]
    add('FSQ [8,5,5,5]', orThrow(fsq({ levels })), 1, () => drawRows([B, N, 4], 1, normals(11, 1.5), fsqElementOk(levels, false)))
    const sym = [4, 3, 6]
    add('FSQ [4,3,6] preserve_symmetry', orThrow(fsq({ levels: sym, preserve_symmetry: true })), 2, () =>
      drawRows([B, N, 3], 1, normals(12, 1.5), fsqElementOk(sym, true)),
    )
  }
  {
    const q = orThrow(lfq({ codebook_size: 256 }))
    add('LFQ 256 eval', q, 3, () => drawRows([B, N, 8], 1, normals(13), (r) => Math.abs(r[0]!) >= 1e-3))
    // the entropy terms see logits 2 * inv_temperature (100) * x.c: at |x| ~ 1 those reach ~10^3,
    // where the reference's own float32 rounding moves the probabilities by ~10^-5 and a backend
    // that rounds differently is compared with that noise. At |x| ~ 0.1 the logits stay ~10^2.
    add('LFQ 256 training (entropy and commitment losses)', q, 3, () => drawRows([B, N, 8], 1, normals(13, 0.1), (r) => Math.abs(r[0]!) >= 1e-4), true)
  }
  for (const cosine of [false, true]) {
    const K = 32, d = 8
    const q = orThrow(vectorQuantize({ dim: d, codebook_size: K, use_cosine_sim: cosine, decay: 0.8 }))
    const x = (init: Init) => drawRows([B, N, d], d, normals(cosine ? 15 : 14), (r) => nearest(r, init.state['_codebook.embed']!.data, K, cosine).clear)
    const kind = cosine ? 'cosine' : 'euclidean'
    add(`VectorQuantize ${kind} eval`, q, 4, x)
    add(`VectorQuantize ${kind} EMA training step`, q, 4, x, true)
  }
  {
    const K = 16, d = 8, nq = 3
    const q = orThrow(residualVQ({ dim: d, codebook_size: K, num_quantizers: nq }))
    add('ResidualVQ 3 layers', q, 5, (init) =>
      drawRows([B, N, d], d, normals(16), residualVqRowOk(Array.from({ length: nq }, (_, l) => init.state[`layers.${l}._codebook.embed`]!.data), K)),
    )
  }
  {
    const levels = [8, 5, 5]
    // layer k's input is the residual divided by its scale levels^-k: the residual's absolute
    // error (a cancellation of values ~1) arrives multiplied by up to max(levels)^k
    const layerGain = (output: string) => {
      const m = /layer(\d+)_input/.exec(output)
      return m ? Math.max(...levels) ** Number(m[1]) : 1
    }
    add('ResidualFSQ [8,5,5] x 3', orThrow(residualFSQ({ levels, num_quantizers: 3 })), 6, () =>
      drawRows([B, N, 3], 3, normals(17), residualFsqElementOk(levels, 3)),
      false,
      layerGain,
    )
    add('GroupedResidualFSQ 2 groups of [8,5,5] x 2', orThrow(groupedResidualFSQ({ dim: 6, groups: 2, levels, num_quantizers: 2 })), 7, () =>
      drawRows([B, N, 6], 3, normals(18), residualFsqElementOk(levels, 2)),
      false,
      layerGain,
    )
  }
  return out
}

/** Every output of an apply by name: quantized, indices, loss, losses.*, state.*, extra.*. */
function leaves(r: HostApplyResult): Map<string, HostTensor> {
  const m = new Map<string, HostTensor>([
    ['quantized', r.quantized],
    ['indices', r.indices],
    ['loss', r.loss],
  ])
  for (const [group, rec] of [['losses', r.losses], ['state', r.state], ['extra', r.extra]] as const)
    for (const [k, v] of Object.entries(rec)) m.set(`${group}.${k}`, v)
  return m
}

/** Worst |got - want| / tolerance over the float outputs (<= 1 passes); integer outputs must be equal. */
function compare(got: HostApplyResult, want: HostApplyResult, caps: Caps, amplify: (output: string) => number = () => 1): { worst: number; where: string } {
  const g = leaves(got), w = leaves(want)
  expect([...g.keys()].sort()).toEqual([...w.keys()].sort())
  let worst = 0, where = ''
  for (const [name, wt] of w) {
    const gt = g.get(name)!
    expect(gt.shape, name).toEqual(wt.shape)
    expect(gt.dtype, name).toBe(wt.dtype)
    if (wt.dtype !== 'float32') {
      expect(Array.from(gt.data), `${name} must equal the reference's exactly`).toEqual(Array.from(wt.data))
      continue
    }
    for (let i = 0; i < wt.data.length; i++) {
      const wv = wt.data[i]!, gv = gt.data[i]!
      const err = Math.abs(gv - wv)
      const tol = tolerance(caps, wv) * amplify(name)
      const ratio = err === 0 ? 0 : tol === 0 ? Infinity : err / tol
      if (!(ratio <= worst)) {
        worst = Number.isNaN(ratio) ? Infinity : ratio
        where = `${name}[${i}]: got ${gv}, want ${wv}, |err| ${err.toExponential(2)}, tolerance ${tol.toExponential(2)}`
      }
    }
  }
  return { worst, where }
}

const lanes: readonly (Lane & { readonly golden: boolean })[] = [
  { name: 'cpu-fused', golden: true, make: async () => fusedCpuBackend() },
  { ...gpuJsLane('cpu'), golden: true },
  { ...gpuJsLane('webasm'), golden: true },
  { ...gpuJsLane('headlessgl'), golden: true },
]

const reference = cpuBackend()
const allCases = cases()
const wanted = new Map<string, Promise<HostApplyResult>>()
const refCodes = new Map<string, Promise<HostTensor>>()
const referenceCodesOf = (c: Case) => {
  if (!refCodes.has(c.name)) refCodes.set(c.name, referenceOf(c).then((r) => decodeQ(reference, c.q, c.init, r.indices)))
  return refCodes.get(c.name)!
}
const referenceOf = (c: Case) => {
  if (!wanted.has(c.name)) wanted.set(c.name, applyQ(reference, c.q, c.init, c.x, { training: c.training }))
  return wanted.get(c.name)!
}

for (const lane of lanes) {
  describe(`quantizers on ${lane.name} vs the CPU reference`, async () => {
    const made = await lane.make()
    if ('skip' in made) {
      console.warn(`[quantizers/backends] ${lane.name} is SKIPPED: ${made.skip}`)
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      return
    }
    const backend = made
    afterAll(() => backend.dispose?.())
    const worst: string[] = []
    afterAll(() => console.log(`[quantizers/backends] ${lane.name}: worst |err| / tolerance (OPS = ${OPS}) per case\n  ${worst.join('\n  ')}`))

    for (const c of allCases)
      it(`${c.name}: indices exact, floats within ${OPS} ops of caps, indicesToCodes == quantized`, async () => {
        const want = await referenceOf(c)
        const got = await applyQ(backend, c.q, c.init, c.x, { training: c.training })
        const { worst: w, where } = compare(got, want, backend.caps, c.amplify)
        worst.push(`${c.name}: ${w.toFixed(3)}${where ? ` (${where})` : ''}`)
        expect(w, where).toBeLessThanOrEqual(1)
        // decoding the indices on this backend gives this backend's quantized output: as close as
        // the reference's own decode is to its output (a residual sum in another order differs by
        // float32 rounding there too), plus this backend's tolerance on each side
        if (!c.training) {
          const codes = await decodeQ(backend, c.q, c.init, got.indices)
          const refCodes = await referenceCodesOf(c)
          expect(codes.shape).toEqual(got.quantized.shape)
          codes.data.forEach((v, i) => {
            const q = got.quantized.data[i]!, rv = refCodes.data[i]!, rq = want.quantized.data[i]!
            expect(Math.abs(v - rv), `indicesToCodes element ${i}: ${v}, reference ${rv}`).toBeLessThanOrEqual(tolerance(backend.caps, rv))
            expect(Math.abs(v - q), `indicesToCodes element ${i}: ${v} vs quantized ${q}`).toBeLessThanOrEqual(Math.abs(rv - rq) + 2 * tolerance(backend.caps, q))
          })
        }
      })

    if (lane.golden)
      it('golden cases from the reference report as recorded (indices exact, floats within 1e-5)', async () => {
        expect(existsSync(goldenDir), `expected reference cases at ${goldenDir}`).toBe(true)
        const { files, reports } = await goldenReports(backend)
        expectAsRecorded(files, reports)
      })
  })
}
