import type { Backend, Caps, HostTensor, Prim, Program } from '@tessera/core'
import { allocate } from '@tessera/core'
import type { ProgramCase } from '@tessera/core/testing'
import { checkAgainstReference, edgeCases, primCases, randomProgramArb, randomProgramTolerance, tolClassOf, toleranceFor } from '@tessera/core/testing'
import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import { applyPrim, interpretProgram, referenceCaps } from '../src/index.js'

/**
 * The conformance suite must be able to fail. Each mutant is the reference with one rule
 * changed the way a real backend gets it wrong; the suite's generators must find it.
 */
type Override = (prim: Prim, ins: readonly HostTensor[], params: unknown, ref: HostTensor) => HostTensor

function mutantBackend(override: Override, caps: Caps = referenceCaps): Backend {
  const interpret = (program: Program, inputs: readonly HostTensor[]) => {
    const env = new Map<number, HostTensor>()
    program.inputs.forEach((v, i) => env.set(v.id, inputs[i]!))
    for (const e of program.eqns) {
      const ins = e.inputs.map((v) => env.get(v.id)!)
      const ref = applyPrim(e.prim, ins, e.params as never, e.out.aval)
      env.set(e.out.id, override(e.prim, ins, e.params, ref))
    }
    return program.outputs.map((v) => env.get(v.id)!)
  }
  return { name: 'mutant', caps, compile: (p) => ({ run: async (x) => interpret(p, x), dispose() {} }) }
}

const mapData = (t: HostTensor, f: (v: number, i: number) => number): HostTensor => {
  const d = allocate(t.dtype, t.data.length)
  t.data.forEach((v, i) => (d[i] = f(v, i)))
  return { ...t, data: d } as HostTensor
}

async function suiteFinds(backend: Backend, prim: Prim): Promise<boolean> {
  const arb = primCases(backend.caps)[prim] as fc.Arbitrary<ProgramCase>
  const cls = tolClassOf[prim]
  try {
    await fc.assert(
      fc.asyncProperty(arb, (c) =>
        checkAgainstReference(backend, interpretProgram, c, toleranceFor(cls, backend.caps), { magnitude: cls === 'accumulate' }),
      ),
      { numRuns: 200, seed: 42 },
    )
    return false
  } catch {
    return true
  }
}

const gpuLikeCaps: Caps = { ...referenceCaps, atol: 1e-6, rtol: 1e-5, transcendentalRtol: 1e-4 }

describe('the conformance generators catch wrong backends', () => {
  test('an unchanged backend passes', async () => {
    expect(await suiteFinds(mutantBackend((_p, _i, _q, r) => r), 'round')).toBe(false)
    expect(await suiteFinds(mutantBackend((_p, _i, _q, r) => r, gpuLikeCaps), 'matmul')).toBe(false)
  })

  test('round as floor(x + 0.5) (gpu.js Math.round)', async () => {
    const b = mutantBackend((p, ins, _q, r) => (p === 'round' ? mapData(ins[0]!, (v) => Math.floor(v + 0.5)) : r))
    expect(await suiteFinds(b, 'round')).toBe(true)
  })

  test('argmin that keeps the last index among ties', async () => {
    const b = mutantBackend((p, ins, q, r) => {
      if (p !== 'argmin' || ins[0]!.shape.length !== 1) return r
      const d = Array.from(ins[0]!.data as ArrayLike<number>)
      return mapData(r, () => d.lastIndexOf(Math.min(...d)))
    })
    expect(await suiteFinds(b, 'argmin')).toBe(true)
  })

  test('mod with the dividend sign (C %)', async () => {
    const b = mutantBackend((p, ins, _q, r) => (p === 'mod' ? mapData(ins[0]!, (v, i) => { const y = ins[1]!.data[i]!; return y === 0 ? 0 : v % y }) : r))
    expect(await suiteFinds(b, 'mod')).toBe(true)
  })

  test('matmul off by 1e-3 relative, under gpu-like tolerances', async () => {
    const b = mutantBackend((p, _i, _q, r) => (p === 'matmul' ? mapData(r, (v) => v * (1 + 1e-3)) : r), gpuLikeCaps)
    expect(await suiteFinds(b, 'matmul')).toBe(true)
  })

  test('reduce_sum that drops the last element', async () => {
    const b = mutantBackend((p, ins, q, r) => {
      if (p !== 'reduce_sum') return r
      const x = ins[0]!
      const dropped = mapData(x, (v, i) => (i === x.data.length - 1 ? 0 : v))
      return applyPrim('reduce_sum', [dropped], q as never, { shape: r.shape, dtype: r.dtype })
    }, gpuLikeCaps)
    expect(await suiteFinds(b, 'reduce_sum')).toBe(true)
  })

  test('transpose with the inverse permutation', async () => {
    const b = mutantBackend((p, ins, q, r) => {
      if (p !== 'transpose') return r
      const perm = (q as { perm: number[] }).perm
      const inv = perm.map((_, i) => perm.indexOf(i))
      const out = applyPrim('transpose', ins, { perm: inv }, { shape: inv.map((a) => ins[0]!.shape[a]!), dtype: r.dtype })
      return { ...r, data: out.data } as HostTensor
    })
    expect(await suiteFinds(b, 'transpose')).toBe(true)
  })

  test('random_uniform with a different mixer', async () => {
    const b = mutantBackend((p, _i, _q, r) => (p === 'random_uniform' ? mapData(r, (v) => (v * 7) % 1) : r))
    expect(await suiteFinds(b, 'random_uniform')).toBe(true)
  })

  test('random programs catch a broadcast that repeats the wrong axis', async () => {
    const b = mutantBackend((p, ins, q, r) => {
      if (p !== 'broadcast') return r
      const x = ins[0]!
      // broadcast [m,1] -> [m,n] where row 0 reads the column along the wrong axis
      if (x.shape.length !== 2 || x.shape[1] !== 1 || x.shape[0] === 1) return r
      const n = r.shape[1]!
      return mapData(r, (_v, i) => x.data[Math.floor(i / n) === 0 ? i % x.shape[0]! : Math.floor(i / n)]!)
    }, gpuLikeCaps)
    let found = false
    try {
      await fc.assert(
        fc.asyncProperty(randomProgramArb, async (c) => {
          const bound = randomProgramTolerance(b.caps, c.program.eqns.length)
          await checkAgainstReference(b, interpretProgram, c, () => bound)
        }),
        { numRuns: 300, seed: 7 },
      )
    } catch {
      found = true
    }
    expect(found).toBe(true)
  })

  test('the edge-case tables are the reference semantics', () => {
    for (const ec of edgeCases) {
      const c = ec.build()
      const out = interpretProgram(c.program, c.inputs)[0]!
      expect(out.dtype, ec.name).toBe(ec.wantDtype)
      Array.from(out.data as ArrayLike<number>).forEach((v, i) => {
        const w = ec.want[i]!
        expect(v === w || (Number.isNaN(v) && Number.isNaN(w)), `${ec.name} element ${i}: ${v} vs ${w}`).toBe(true)
      })
    }
  })
})
