import { fc, test } from '@fast-check/vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Tensor } from '@tessera/core'
import { runOrThrow, tensorOf, traceOrThrow } from '@tessera/core'
import { describe, expect } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

describe('WebAssembly elementwise loops', () => {
  // Adam's shape of update (moments, sqrt, divide by a scalar, add eps, step) on sizes that are and
  // are not a multiple of 4, with signed zeros, subnormals, infinities and NaN among the inputs
  const special = [0, -0, 1e-40, -1e-45, Infinity, -Infinity, NaN, 3.4e38, 1e-30]
  test.prop([fc.integer({ min: 4096, max: 4103 }), fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.double({ min: 1e-6, max: 10, noNaN: true })], { numRuns: 12 })(
    'an Adam-like update gives the reference bit for bit (IEEE float32 rounds like Math.fround of the float64 op)',
    async (n, seed, lr) => {
      const p = traceOrThrow([f32([n]), f32([n]), f32([n]), f32([n]), f32([])], (w: Tensor, g: Tensor, m: Tensor, v: Tensor, s: Tensor) => {
        const m1 = m.mul(0.9).add(g.mul(0.1))
        const v1 = v.mul(0.999).add(g.mul(g).mul(0.001))
        const denom = v1.sqrt().div(s).add(1e-8)
        const w1 = w.sub(m1.div(denom).mul(s.mul(lr))).neg().abs().sub(g)
        return [m1, v1, w1]
      }).program
      // all three run as WebAssembly (the moments share the gradient: one pass; the new weight
      // joins it only if its scalar, s * lr, is computed before that pass)
      const plan = planProgram(p, { wasm: true, threads: 1 })
      expect(plan.steps.flatMap((s) => (s.kind === 'elem' ? s.outs : [])).length).toBe(3)
      let st = seed
      const rnd = () => {
        st = (Math.imul(st, 1103515245) + 12345) >>> 0
        return st % 50 === 0 ? special[st % special.length]! : ((st / 2 ** 32) * 8 - 4) * 2 ** ((st % 40) - 20)
      }
      const ins: HostTensor[] = [0, 1, 2].map(() => tensorOf(Array.from({ length: n }, rnd), [n]))
      ins.push(tensorOf(Array.from({ length: n }, () => Math.abs(rnd())), [n]), tensorOf([Math.fround(0.97)], []))
      const want = interpretProgram(p, ins)
      const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
      got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
      // a second call on the same executable-sized memory gives the same
      const again = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
      again.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
    },
  )

  test('Adam over two parameters of one size: one pass per parameter, each the reference bits', async () => {
    // the update of packages/nn's adam (torch.optim.Adam), written out: bias corrections from the
    // step count first, then per parameter the two moments and the step
    const [r, c] = [64, 100]
    const p = traceOrThrow([f32([r, c]), f32([c, r]), f32([r, c]), f32([c, r]), f32([r, c]), f32([c, r]), f32([r, c]), f32([c, r]), f32([])], (...x: Tensor[]) => {
      const [p1, p2, g1, g2, m1, m2, v1, v2, step] = x as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
      const t1 = step.add(1)
      const bl = t1.builder
      const stepSize = bl.scalar(2e-3).div(bl.scalar(0.9).pow(t1).rsub(1))
      const bc2Sqrt = bl.scalar(0.999).pow(t1).rsub(1).sqrt()
      const one = (w: Tensor, g: Tensor, m0: Tensor, v0: Tensor) => {
        const m = m0.mul(0.9).add(g.mul(1 - 0.9))
        const v = v0.mul(0.999).add(g.mul(g).mul(1 - 0.999))
        return [w.sub(m.div(v.sqrt().div(bc2Sqrt).add(1e-8)).mul(stepSize)), m, v]
      }
      return [...one(p1, g1, m1, v1), ...one(p2, g2, m2, v2), t1]
    }).program
    const plan = planProgram(p, { wasm: true, threads: 1 })
    expect(plan.steps.filter((s) => s.kind === 'elem').map((s) => (s.kind === 'elem' ? s.outs.length : 0))).toEqual([3, 3])
    let st = 9
    const rnd = () => ((st = (Math.imul(st, 1103515245) + 12345) >>> 0), (st / 2 ** 32) * 2 - 1)
    const ins = p.inputs.map((v) => {
      const n = v.aval.shape.reduce((a, b) => a * b, 1)
      // the step count is a small integer; second moments are non-negative
      return tensorOf(v.aval.shape.length === 0 ? [3] : Array.from({ length: n }, () => Math.abs(rnd()) * 1e-2), [...v.aval.shape])
    })
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
  })

  test.each([[64, 784], [400, 13], [5, 1000]])('a bias broadcast along rows (%i x %i) runs in the pass and gives the reference bits', async (rows, width) => {
    const p = traceOrThrow([f32([rows, width]), f32([width]), f32([rows, width]), f32([])], (y: Tensor, bias: Tensor, x: Tensor, s: Tensor) => {
      const recon = y.add(bias)
      return [recon.sub(x).mul(s).mul(2), recon.add(bias.reshape([1, width]).mul(0.5))]
    }).program
    expect(planProgram(p, { wasm: true, threads: 1 }).steps.flatMap((st) => (st.kind === 'elem' ? st.outs : [])).length).toBe(2)
    const r = (i: number) => Math.sin(i * 1.3) * 4
    const ins = [
      tensorOf(Array.from({ length: rows * width }, (_, i) => r(i)), [rows, width]),
      tensorOf(Array.from({ length: width }, (_, i) => r(i + 7) * 0.1), [width]),
      tensorOf(Array.from({ length: rows * width }, (_, i) => r(i * 3)), [rows, width]),
      tensorOf([Math.fround(1 / 3)], []),
    ]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
  })

  // FSQ in the TRAIN step: the encoder's bias [128] broadcast to [64, 128], the sum reshaped to
  // tokens of 4 levels, bounded with tanh (a side output) and summed per token: the bias is a
  // row of the broadcast's own shape, not of the reshaped root's (a misread row gives values far
  // off; tanh itself is within one ulp of the reference's, the backend's transcendental contract)
  test.each([[64, 128, 4], [100, 45, 5], [33, 126, 3]])('a bias broadcast before a reshape (%i x %i, tokens of %i) is a row: the tanh side output (within one ulp) and the token sums (bits) in one pass, as the reference', async (rows, width, d) => {
    const p = traceOrThrow([f32([rows, width]), f32([width]), f32([d])], (y: Tensor, bias: Tensor, shift: Tensor) => {
      const z = y.add(bias).reshape([rows, width / d, 1, d])
      const t = z.add(shift).tanh()
      return [t, t.mul(2.5).round().mul(shift).sum([3])]
    }).program
    const plan = planProgram(p, { wasm: true, threads: 1 })
    expect(plan.steps.map((s) => (s.kind === 'elem' ? s.outs.length : s.kind))).toEqual([2])
    const ins = [
      tensorOf(Array.from({ length: rows * width }, (_, i) => (i % 97 === 5 ? [NaN, -0, Infinity, 1e-40][i % 4]! : Math.sin(i * 1.7) * 3)), [rows, width]),
      tensorOf(Array.from({ length: width }, (_, i) => Math.cos(i) * 0.5), [width]),
      tensorOf(Array.from({ length: d }, (_, i) => i * 0.25 - 0.3), [d]),
    ]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    const bits = (x: HostTensor) => new Int32Array(Float32Array.from(x.data as Float32Array).buffer)
    const [gt, wt] = [bits(got[0]!), bits(want[0]!)]
    wt.forEach((w, i) => expect(Number.isNaN(want[0]!.data[i]!) ? Number.isNaN(got[0]!.data[i]!) : Math.abs(gt[i]! - w) <= 1, `tanh element ${i}`).toBe(true))
    expect(Array.from(got[1]!.data)).toEqual(Array.from(want[1]!.data))
  })

  // (passes of at least 4096 elements run as WebAssembly) a vector constant along the last axis of its broadcast is no row, whatever shape a reshape
  // gives the result afterwards ([128, 1] -> [128, 64] read as [64, 128, 1] has the trailing dims
  // [128, 1], but element o is u[o / 64], not u[o % 128]): it is a per-row value (constant along
  // trailing axes of 64 elements); a [1, 128] one is a row; one constant along leading and
  // trailing axes but not a middle one is neither
  test.each([
    { u: [128, 1], to: [128, 64], root: [64, 128, 1], row: true },
    { u: [32, 1], to: [64, 32, 4], root: [64, 4, 32, 1], row: false },
    { u: [1, 128], to: [64, 128], root: [64, 32, 4], row: true },
    { u: [4, 1, 8], to: [8, 4, 16, 8], root: [128, 4, 1, 8], row: false },
  ])('a broadcast of $u to $to read as $root: in a pass only as a row or a per-row value ($row), the reference bits', async ({ u, to, root, row }) => {
    const n = to.reduce((a, b) => a * b, 1)
    const p = traceOrThrow([f32(root), f32(u)], (x: Tensor, v: Tensor) => [x.mul(v.broadcastTo(to).reshape(root)).add(0.5)]).program
    const steps = planProgram(p, { wasm: true, threads: 1 }).steps
    expect(steps.some((s) => s.kind === 'elem')).toBe(row)
    const ins = [tensorOf(Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 4), root), tensorOf(Array.from({ length: u.reduce((a, b) => a * b, 1) }, (_, i) => i + 1), u)]
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    expect(Array.from(got[0]!.data)).toEqual(Array.from(want[0]!.data))
  })

  test('a reduction whose side outputs run as WebAssembly reads them back: same bits', async () => {
    const n = 5001
    const p = traceOrThrow([f32([n]), f32([n])], (a: Tensor, b: Tensor) => {
      const c = a.sub(b.mul(0.5)).div(b.abs().add(1))
      return [c, c.abs().le(3).cast('float32').min(), c.add(1).sum()]
    }).program
    const ins = [tensorOf(Array.from({ length: n }, (_, i) => Math.sin(i) * 5), [n]), tensorOf(Array.from({ length: n }, (_, i) => Math.cos(i * 0.3)), [n])]
    expect(planProgram(p, { wasm: true, threads: 1 }).steps.some((s) => s.kind === 'elem')).toBe(true)
    const want = interpretProgram(p, ins)
    const got = await runOrThrow(p, ins, fastBackend({ threads: 1 }))
    got.forEach((g, i) => expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data)))
  })
})
