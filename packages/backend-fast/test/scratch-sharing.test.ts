import { interpretProgram } from '@tessera/backend-cpu'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { traceOrThrow } from '@tessera/core'
import { describe, expect, it } from 'vitest'
import { fastBackend, planProgram } from '../src/index.js'
import { residualProgram } from './loop-helpers.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
const wave = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 0.7)
const bitsOf = (t: HostTensor) => Array.from(new Int32Array(t.data.buffer, t.data.byteOffset, t.data.length))

/** Distinct shared buffers, and slots on them, among the plan's stored intermediates of `shape` (those some step writes). */
function sharing(p: Program, shape: number[], gatherInPasses = true) {
  const plan = planProgram(p, { wasm: true, threads: 1, gatherInPasses })
  const written = new Set(plan.steps.flatMap((st) => (st.kind === 'elem' ? st.outs : st.kind === 'rows' ? [] : [st.out])))
  const slots = plan.slotVars.flatMap((v, s) => (v.aval.shape.join() === shape.join() && written.has(s) && !plan.outputSlots.includes(s) ? [s] : []))
  return { slots: slots.length, buffers: new Set(slots.map((s) => plan.scratchOf[s])).size, own: slots.filter((s) => plan.scratchOf[s]! < 0).length }
}

describe('intermediate buffers shared by values whose lifetimes do not overlap', () => {
  it("residual VQ's per-layer residuals take turns on buffers, and every call gives the reference's bits", async () => {
    const [n, d, k, layers] = [512, 16, 64, 5]
    const p = residualProgram(n, d, k, layers)
    // stored, a residual and a gathered code per layer: the codes stay alive for the final sum, residuals alternate
    const stored = sharing(p, [n, d], false)
    expect(stored.own).toBe(0)
    expect(stored.slots).toBeGreaterThanOrEqual(2 * layers - 1)
    expect(stored.buffers).toBeLessThan(stored.slots)
    expect(stored.buffers).toBeLessThanOrEqual(layers + 2)
    // gathered in the passes that read them, the codes take no buffer: residuals and running sums alternate
    const s = sharing(p, [n, d])
    expect(s.own).toBe(0)
    expect(s.slots).toBeLessThan(stored.slots)
    expect(s.buffers).toBeLessThanOrEqual(2)
    const ins = [{ shape: [n, d], dtype: 'float32' as const, data: wave(n * d, 1) }, ...Array.from({ length: layers }, (_, l) => ({ shape: [k, d], dtype: 'float32' as const, data: wave(k * d, l + 2) }))] as HostTensor[]
    const want = interpretProgram(p, ins).map(bitsOf)
    for (const [threads, gatherInPasses] of [[1, true], [2, true], [1, false]] as const) {
      const be = fastBackend({ threads, gatherInPasses })
      try {
        const exe = be.compile(p)
        // the second call finds the shared buffers holding the first call's values
        for (let call = 0; call < 2; call++) expect((await exe.run(ins)).map(bitsOf)).toEqual(want)
      } finally {
        await be.dispose!()
      }
    }
  })

  it('values read again far ahead keep their buffers until their last reader', async () => {
    const [n, d] = [16, 32]
    // matmul operands are stored: h1, h2 and h3 live across the steps after them, and a, b, c
    // between, all of one size, so the plan has buffers to hand on and reads to respect (the
    // products are small enough for the float64-exact JS matmul, which gives the reference's bits)
    const p = traceOrThrow([f32([n, d]), f32([d, d]), f32([d, d]), f32([d, d])], (x: Tensor, w1: Tensor, w2: Tensor, w3: Tensor) => {
      const h1 = x.matmul(w1)
      const a = h1.abs().sqrt()
      const h2 = a.matmul(w2)
      const b = h2.mul(h1).abs().sqrt()
      const h3 = b.matmul(w3)
      const c = h3.sub(a).abs().sqrt()
      // c's last reader: a product must not write over the operand it is reading
      const h4 = c.matmul(w1)
      return [h4.add(h1).add(b.mul(h2))]
    }).program
    const s = sharing(p, [n, d])
    expect(s.buffers).toBeLessThan(s.slots)
    const ins = [{ shape: [n, d], dtype: 'float32' as const, data: wave(n * d, 3) }, ...[4, 5, 6].map((seed) => ({ shape: [d, d], dtype: 'float32' as const, data: wave(d * d, seed) }))] as HostTensor[]
    const want = interpretProgram(p, ins).map(bitsOf)
    const be = fastBackend({ threads: 1 })
    try {
      const exe = be.compile(p)
      for (let call = 0; call < 2; call++) expect((await exe.run(ins)).map(bitsOf)).toEqual(want)
    } finally {
      await be.dispose!()
    }
  })
})
