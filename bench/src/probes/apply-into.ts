/**
 * A VectorQuantize training loop through applyOnHost on the fast backend (EMA codebook, 1024
 * codes of dim 64, 8 x 1024 tokens a step), its steps writing fresh results against writing over
 * the result before last (`into`), alternated in one process; prints each one's median and
 * minimum step in ms. argv: threads (default 2).
 */
import * as E from 'fp-ts/lib/Either.js'
import { fastBackend } from '@tessera/backend-fast'
import { random, tensorOf } from '@tessera/core'
import type { HostApplyResult } from '@tessera/quantizers'
import { applyOnHost, compileCache, vectorQuantize } from '@tessera/quantizers'

const threads = Number(process.argv[2] ?? 2)
const made = vectorQuantize({ dim: 64, codebook_size: 1024, decay: 0.99 })
if (E.isLeft(made)) throw made.left
const q = made.right
const init = q.init(random.keyFromSeed(0))
const x = tensorOf(random.normalHost(random.keyFromSeed(1), 8 * 1024 * 64), [8, 1024, 64])
const key = tensorOf([1, 2], [2], 'int32')
const backend = fastBackend({ threads })
const cache = compileCache()
const step = async (state: HostApplyResult['state'], into?: HostApplyResult): Promise<HostApplyResult> => {
  const r = await applyOnHost(q, { params: init.params, state, x, key, training: true, ...(into ? { into } : {}) }, backend, cache)
  if (E.isLeft(r)) throw r.left
  return r.right
}
const loops = {
  fresh: { last: await step(init.state), spare: undefined as HostApplyResult | undefined, into: false, times: [] as number[] },
  into: { last: await step(init.state), spare: undefined as HostApplyResult | undefined, into: true, times: [] as number[] },
}
for (let i = 0; i < 8; i++) for (const l of Object.values(loops)) {
  const next = await step(l.last.state, l.into ? l.spare : undefined)
  l.spare = l.last
  l.last = next
}
for (let r = 0; r < 60; r++)
  for (const l of r % 2 ? [loops.fresh, loops.into] : [loops.into, loops.fresh]) {
    const t = performance.now()
    const next = await step(l.last.state, l.into ? l.spare : undefined)
    l.times.push(performance.now() - t)
    l.spare = l.last
    l.last = next
  }
const med = (a: number[]) => [...a].sort((u, v) => u - v)[a.length >> 1]!
const fmt = (a: number[]) => `median ${med(a).toFixed(2)} min ${Math.min(...a).toFixed(2)} ms`
console.log(`VQ training step, ${threads} threads: fresh results ${fmt(loops.fresh.times)}; into ${fmt(loops.into.times)}`)
cache.dispose()
await backend.dispose!()
