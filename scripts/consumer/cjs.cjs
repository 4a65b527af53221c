// CommonJS consumer: require() of the ESM-only packages (Node >= 20.19 loads ES modules synchronously).
const { cpuBackend } = require('@tessera/backend-cpu')
const { fastBackend } = require('@tessera/backend-fast')
const { gpuJsModes } = require('@tessera/backend-gpujs')
const { main } = require('@tessera/cli')
const { getOrThrow, isLeft, random, tensorOf, TesseraError } = require('@tessera/core')
const { mlp } = require('@tessera/nn')
const { applyOnHost, fsq } = require('@tessera/quantizers')

async function run() {
  const q = getOrThrow(fsq({ levels: [8, 5, 5, 5] }))
  const { params, state } = q.init(random.keyFromSeed(0))
  const x = tensorOf(random.normalHost(random.keyFromSeed(1), 2 * 16 * 4), [2, 16, 4])
  const a = getOrThrow(await applyOnHost(q, { params, state, x }, cpuBackend()))
  const b = getOrThrow(await applyOnHost(q, { params, state, x }, fastBackend({ threads: 1 })))
  if (a.indices.data.some((v, i) => v !== b.indices.data[i])) throw new Error('cjs: fast and cpu indices differ')
  const bad = fsq({ levels: [2, 2, 2] })
  if (!isLeft(bad) || !(bad.left instanceof TesseraError)) throw new Error('cjs: a bad config should be a Left holding a TesseraError')
  if (typeof main !== 'function' || typeof mlp !== 'function' || !gpuJsModes.includes('webgl2')) throw new Error('cjs: exports missing')
  console.log(`cjs: require() of every package works; fsq on cpu and fast agree on ${a.indices.data.length} indices`)
}
run().catch((e) => {
  console.error(e)
  process.exit(1)
})
