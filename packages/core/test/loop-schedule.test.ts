import { fc, test } from '@fast-check/vitest'
import { describe, expect } from 'vitest'
import type { LoopSchedule, Program, ScheduleStep, Tensor } from '../src/index.js'
import { ProgramGraph, axisDependence, decideStorage, scheduleLoops, traceOrThrow } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })

const ROWS = { chainMinElems: 1 << 20, blockElems: 32768, threadMinElems: 1 << 18, threads: 1 }
const EXP = { minElems: 1 << 16, step: 4, maxWidth: 32768 }

const kinds = (s: LoopSchedule) => s.steps.map((st: ScheduleStep) => st.kind)

function nearestProgram(n: number, d: number, k: number): Program {
  return traceOrThrow([f32([n, d]), f32([k, d])], (x: Tensor, cb: Tensor) => {
    const dist = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1))
    return [dist.argmin(-1)]
  }).program
}

describe('loop schedule: storage', () => {
  test('reductions, outputs and values read by buffer-reading primitives are stored; elementwise chains are not', () => {
    const p = traceOrThrow([f32([4, 3])], (x: Tensor) => {
      const y = x.mul(2).add(1).tanh() // one reader: inlined
      return [y.sum(-1), y.matmul(x.mT)] // the matmul reads y from memory: stored
    }).program
    const stored = decideStorage(new ProgramGraph(p))
    const byPrim = (prim: string) => p.eqns.filter((e) => e.prim === prim).map((e) => stored.has(e.out.id))
    expect(byPrim('reduce_sum')).toEqual([true])
    expect(byPrim('matmul')).toEqual([true])
    expect(byPrim('tanh')).toEqual([true])
    expect(byPrim('mul')).toEqual([false])
  })

  test('a costly value read by two loops is stored once, a cheap one is recomputed', () => {
    const p = traceOrThrow([f32([8])], (x: Tensor) => {
      const e = x.exp()
      const c = x.add(1)
      return [e.sum(), e.max(), c.sum(), c.max()]
    }).program
    const stored = decideStorage(new ProgramGraph(p))
    expect(p.eqns.filter((e) => e.prim === 'exp').every((e) => stored.has(e.out.id))).toBe(true)
    expect(p.eqns.filter((e) => e.prim === 'add').some((e) => stored.has(e.out.id))).toBe(false)
  })
})

describe('loop schedule: patterns', () => {
  test('nearest-code search is one step; its distance matrix and transposed codebook are never stored', () => {
    const s = scheduleLoops(nearestProgram(10, 3, 5), { nearest: true })
    expect(kinds(s)).toEqual(['reduce', 'reduce', 'nearest'])
    const near = s.steps.find((st) => st.kind === 'nearest')!
    if (near.kind !== 'nearest') throw new Error('unreachable')
    expect(s.stored.has(near.pattern.matmul.out.id)).toBe(false)
    expect(s.stored.has(near.pattern.matmul.inputs[1]!.id)).toBe(false)
    // |x|^2 depends on the row; the literal 2 on neither axis (taken as a column term); |c|^2 on the column
    expect(near.pattern.terms.map((t) => t.dep)).toEqual(['row', 'col', 'col'])
    // without a nearest kernel the distances are a matmul and a loop of their own
    expect(kinds(scheduleLoops(nearestProgram(10, 3, 5), { nearest: false }))).toEqual(['reduce', 'loop', 'matmul', 'reduce', 'reduce'])
  })

  test('a matmul read twice, or an argmin over a non-trailing axis, is not the pattern', () => {
    const twice = traceOrThrow([f32([6, 2]), f32([4, 2])], (x: Tensor, cb: Tensor) => {
      const dot = x.matmul(cb.mT)
      return [dot.neg().argmin(-1), dot]
    }).program
    expect(kinds(scheduleLoops(twice, { nearest: true }))).not.toContain('nearest')
    const axis0 = traceOrThrow([f32([6, 2]), f32([4, 2])], (x: Tensor, cb: Tensor) => [x.matmul(cb.mT).neg().argmin(0)]).program
    expect(kinds(scheduleLoops(axis0, { nearest: true }))).not.toContain('nearest')
  })

  test.prop([fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 6 })])('axis dependence follows movement ops', (m, n) => {
    const p = traceOrThrow([f32([m, 1]), f32([1, n]), f32([n, m])], (a: Tensor, b: Tensor, c: Tensor) => [
      a.broadcastTo([m, n]).add(1),
      b.broadcastTo([m, n]).mul(3),
      c.mT.neg(),
    ]).program
    const g = new ProgramGraph(p)
    const stored = (v: { id: number }) => g.isInput(v as never)
    const [row, col, both] = p.outputs.map((v) => axisDependence(v, g, stored))
    // a size-1 axis never varies, so it is nobody's dependence
    expect(row).toBe(m === 1 ? 0 : 1)
    expect(col).toBe(n === 1 ? 0 : 2)
    expect(both).toBe((m === 1 ? 0 : 1) | (n === 1 ? 0 : 2))
  })

  test("a large exp is a map whose prologue reads softmax's scaled logits minus the row max", () => {
    const p = traceOrThrow([f32([64, 1024])], (x: Tensor) => [x.mul(0.5).softmax(-1)]).program
    const s = scheduleLoops(p, { nearest: false, expMap: EXP })
    const map = s.steps.find((st) => st.kind === 'expMap')
    expect(map).toBeDefined()
    if (map?.kind !== 'expMap') throw new Error('unreachable')
    expect(map.pattern.ops.map((o) => o.op)).toEqual(['mul', 'sub'])
    expect(map.pattern.rows).toHaveLength(1)
    // a small exp stays fused in its loop
    const small = traceOrThrow([f32([4, 8])], (x: Tensor) => [x.softmax(-1)]).program
    expect(kinds(scheduleLoops(small, { nearest: false, expMap: EXP }))).not.toContain('expMap')
  })

  test('a stored elementwise value of a reduction operand shape is written by that reduction (side output)', () => {
    const p = traceOrThrow([f32([5, 4])], (x: Tensor) => {
      const codes = x.tanh().round()
      return [codes, codes.sum(-1)]
    }).program
    const s = scheduleLoops(p, { nearest: false })
    expect(kinds(s)).toEqual(['reduce'])
    const red = s.steps[0]!
    if (red.kind !== 'reduce') throw new Error('unreachable')
    expect(red.sides.map((v) => v.id)).toEqual([p.outputs[0]!.id])
  })
})

describe('loop schedule: row chains', () => {
  const entropy = (n: number) =>
    traceOrThrow([f32([n, 3]), f32([8, 3])], (x: Tensor, cb: Tensor) => {
      const prob = x.matmul(cb.mT).softmax(-1)
      return [prob.mul(prob.maximum(1e-5).log()).sum(-1).neg().mean(), prob.mean(0)]
    }).program

  test('forced rows put every row-wise step into one chain; the probabilities live only in blocks', () => {
    const s = scheduleLoops(entropy(50), { nearest: false, rows: { ...ROWS, forcedRows: 7 } })
    const chain = s.steps.find((st) => st.kind === 'rows')
    expect(chain).toBeDefined()
    if (chain?.kind !== 'rows') throw new Error('unreachable')
    expect(chain.rows).toBe(7)
    expect(chain.n).toBe(50)
    expect(chain.steps.map((c) => c.step.kind)).toContain('matmul')
    // the mean of the row entropies and the column mean are sinks: summed over rows across blocks
    expect(chain.steps.filter((c) => c.sink)).toHaveLength(2)
    expect(chain.local.length).toBeGreaterThan(0)
    expect(chain.workers).toBe(0)
  })

  test('small programs form no chain unless forced; threads are offered only for heavy, large work', () => {
    expect(kinds(scheduleLoops(entropy(50), { nearest: false, rows: ROWS }))).not.toContain('rows')
    const big = scheduleLoops(entropy(1 << 15), { nearest: false, rows: { ...ROWS, threads: 2 } })
    const chain = big.steps.find((st) => st.kind === 'rows')
    if (chain?.kind !== 'rows') throw new Error('expected a chain')
    expect(chain.workers).toBe(1)
  })
})
