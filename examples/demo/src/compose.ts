// The README's composition example: a grouped residual FSQ, run on the CPU reference and on
// gpu.js, with the same parameters and input. Run: pnpm example:compose
import { cpuBackend } from '@tessera/backend-cpu'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import type { Backend } from '@tessera/core'
import { random, tensorOf } from '@tessera/core'
import { applyOnHost, groupedResidualFSQ } from '@tessera/quantizers'

// Configs are decoded at the boundary: a bad field is a Left that names it.
const bad = groupedResidualFSQ({ dim: 16, groups: 3, levels: [8, 5, 5, 5], num_quantizers: 3 })
if (bad._tag === 'Left') console.log('refused:', bad.left.message)

const made = groupedResidualFSQ({ dim: 16, groups: 2, levels: [8, 5, 5, 5], num_quantizers: 3 })
if (made._tag === 'Left') throw made.left
const q = made.right
const { params, state } = q.init(random.keyFromSeed(0))
const x = tensorOf(random.normalHost(random.keyFromSeed(1), 2 * 32 * 16), [2, 32, 16])

const mode = (await gpuJsUnavailable('webasm')) === undefined ? 'webasm' : 'cpu'
const backends: Backend[] = [cpuBackend(), gpuJsBackend(mode)]
const results = []
for (const backend of backends) {
  const r = await applyOnHost(q, { params, state, x }, backend)
  if (r._tag === 'Left') throw r.left
  results.push(r.right)
  console.log(`${backend.name}: indices ${r.right.indices.shape.join('x')}, first token ${Array.from(r.right.indices.data.slice(0, 6)).join(' ')}`)
}
const [a, b] = results as [(typeof results)[0], (typeof results)[0]]
const sameIndices = a.indices.data.every((v, i) => v === b.indices.data[i])
const maxDiff = Array.from(a.quantized.data).reduce((m, v, i) => Math.max(m, Math.abs(v - b.quantized.data[i]!)), 0)
console.log(`same indices on both backends: ${sameIndices}; max |quantized difference|: ${maxDiff.toExponential(2)}`)
for (const be of backends) (be as { dispose?: () => void }).dispose?.()
