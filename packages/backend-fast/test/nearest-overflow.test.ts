import { describe, expect, test } from 'vitest'
import { runOrThrow } from '@tessera/core'
import { edgeCases } from '@tessera/core/testing'
import { fastBackend, planProgram } from '../src/index.js'
import { relaxedSimdSupported } from '../src/wasm/asm.js'

/**
 * Issue 15, item 6: the conformance suite's overflow cases for nearest-code search must run
 * through the WebAssembly nearest-code kernel (not a fallback), and give the reference's indices:
 * rows whose distances are all +Inf (or -Inf for argmax) get index 0, a NaN distance wins at its
 * first code. The kernel tracks NaN per SIMD lane, and its row terms (|x|^2) overflow to +Inf as
 * float32 does.
 */
describe('nearest-code kernel on overflowing distances', () => {
  for (const ec of edgeCases.filter((e) => e.name.startsWith('nearest-code search')))
    for (const relaxed of [false, true])
      // relaxed SIMD (fused multiply-add) only where the engine has it: skipped, visibly, elsewhere
      test.skipIf(relaxed && !relaxedSimdSupported())(`${ec.name}${relaxed ? ' (relaxed SIMD)' : ''}`, async () => {
        const c = ec.build()
        expect(planProgram(c.program, { wasm: true, threads: 1 }).steps.map((s) => s.kind)).toContain('nearest')
        const backend = fastBackend({ relaxedSimd: relaxed })
        const [idx] = await runOrThrow(c.program, c.inputs, backend)
        expect(Array.from(idx!.data)).toEqual(ec.want)
      })
})
