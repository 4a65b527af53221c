import { describe, expect, it } from 'vitest'
import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { random } from '@tessera/core'
import { applyOnHost, indicesToCodesOnHost } from '../src/run.js'
import { keyFor, nodeLanes, snapshot, xFor, zoo } from './zoo.js'

/**
 * Issue 15, item 2: no backend returns an array the caller passed in. For every quantizer and
 * backend, in eval and training, every output is overwritten with a sentinel and every input
 * (params, state, x, key) must read as before. The reference used to return unchanged state
 * entries, `extra.codebook_input` (= x) and SimVQ's `extra.codes` as the caller's own arrays.
 */

const outputsOf = (r: { quantized: HostTensor; indices: HostTensor; loss: HostTensor; losses: Record<string, HostTensor>; state: Record<string, HostTensor>; extra: Record<string, HostTensor> }) => [
  r.quantized, r.indices, r.loss, ...Object.values(r.losses), ...Object.values(r.state), ...Object.values(r.extra),
]

for (const lane of nodeLanes) {
  describe(`no output aliases an input: ${lane.name}`, async () => {
    const made = await lane.make()
    if ('skip' in made) {
      it.skip(`${lane.name} skipped: ${made.skip}`, () => {})
      return
    }
    const backend = made
    for (const e of zoo)
      for (const training of [false, true])
        it(`${e.name} ${training ? 'training' : 'eval'}`, async () => {
          const init = e.q.init(random.keyFromSeed(3))
          const x = xFor(e), key = keyFor(5)
          const before = { ...snapshot(init.params), ...snapshot(init.state), x: Array.from(x.data), key: Array.from(key.data) }
          const r = await applyOnHost(e.q, { params: init.params, state: init.state, x, key, training, nonFinite: 'propagate' }, backend)
          if (E.isLeft(r)) throw r.left
          for (const t of outputsOf(r.right)) t.data.fill(t.dtype === 'bool' ? 1 : 77)
          const codes = await indicesToCodesOnHost(e.q, init.params, r.right.indices.dtype === 'int32' ? { ...r.right.indices, data: new Int32Array(r.right.indices.data.length) } : r.right.indices, backend, undefined, init.state)
          if (E.isRight(codes)) codes.right.data.fill(77)
          const after = { ...snapshot(init.params), ...snapshot(init.state), x: Array.from(x.data), key: Array.from(key.data) }
          expect(after).toEqual(before)
        })
  })
}

describe('the aliasing check detects a backend that passes inputs through', () => {
  it("core's evaluator alone returns FSQ's unchanged _levels as the caller's array; cpuBackend copies it", async () => {
    const { interpretProgram, referenceCaps } = await import('@tessera/core')
    const { cpuBackend } = await import('@tessera/backend-cpu')
    const raw = { name: 'raw-evaluator', caps: referenceCaps, compile: (p: Parameters<typeof interpretProgram>[0]) => ({ run: async (xs: readonly HostTensor[]) => interpretProgram(p, xs), dispose() {} }) }
    const e = zoo.find((z) => z.name === 'FSQ')!
    const init = e.q.init(random.keyFromSeed(3))
    for (const [backend, aliases] of [[raw, true], [cpuBackend(), false]] as const) {
      const r = await applyOnHost(e.q, { ...init, x: xFor(e) }, backend)
      if (E.isLeft(r)) throw r.left
      expect(r.right.state['_levels']!.data === init.state['_levels']!.data).toBe(aliases)
    }
  })
})
