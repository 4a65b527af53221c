/**
 * A VectorQuantize training loop through applyOnHost on the fast backend (EMA codebook, 1024
 * codes of dim 64, 8 x 1024 tokens a step), its steps writing fresh results, writing over the
 * result before last (`into`), and that without any extra entry (`extra: []`, so no distance is
 * returned), alternated in one process; prints each one's median and minimum step in ms. argv:
 * threads (default 2).
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
const step = async (state: HostApplyResult['state'], into?: HostApplyResult, noExtra = false): Promise<HostApplyResult> => {
  const r = await applyOnHost(q, { params: init.params, state, x, key, training: true, ...(noExtra ? { extra: [] } : {}), ...(into ? { into } : {}) }, backend, cache)
  if (E.isLeft(r)) throw r.left
  return r.right
}
interface Loop { last: HostApplyResult; spare: HostApplyResult | undefined; readonly into: boolean; readonly noExtra: boolean; readonly times: number[] }
const loop = async (into: boolean, noExtra: boolean): Promise<Loop> => ({ last: await step(init.state, undefined, noExtra), spare: undefined, into, noExtra, times: [] })
const loops = { fresh: await loop(false, false), into: await loop(true, false), noExtra: await loop(true, true) }
const order = Object.values(loops)
const advance = async (l: Loop) => {
  const next = await step(l.last.state, l.into ? l.spare : undefined, l.noExtra)
  l.spare = l.last
  l.last = next
}
for (let i = 0; i < 8; i++) for (const l of order) await advance(l)
for (let r = 0; r < 60; r++)
  for (const l of r % 2 ? [...order].reverse() : order) {
    const t = performance.now()
    await advance(l)
    l.times.push(performance.now() - t)
  }
const med = (a: number[]) => [...a].sort((u, v) => u - v)[a.length >> 1]!
const fmt = (a: number[]) => `median ${med(a).toFixed(2)} min ${Math.min(...a).toFixed(2)} ms`
console.log(`VQ training step, ${threads} threads: fresh results ${fmt(loops.fresh.times)}; into ${fmt(loops.into.times)}; into, extra: [] ${fmt(loops.noExtra.times)}`)
cache.dispose()
await backend.dispose!()
