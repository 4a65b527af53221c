// The work every consumer run does (Node ESM and the browser bundles): FSQ and VQ quantize the same
// inputs on the reference and on the backend under test, and the indices must be identical.
import { cpuBackend } from '@tessera/backend-cpu'
import { getOrThrow, isLeft, random, tensorOf } from '@tessera/core'
import { applyOnHost, decodeSafetensors, encodeSafetensors, fsq, vectorQuantize } from '@tessera/quantizers'

const quantizers = () => [
  { name: 'fsq', dim: 4, q: getOrThrow(fsq({ levels: [8, 5, 5, 5] })) },
  { name: 'vq', dim: 8, q: getOrThrow(vectorQuantize({ dim: 8, codebook_size: 64 })) },
]

/** Indices of each quantizer on `backend`, by quantizer name. */
export async function indicesOn(backend) {
  const out = {}
  for (const { name, dim, q } of quantizers()) {
    const { params, state } = q.init(random.keyFromSeed(0))
    const x = tensorOf(random.normalHost(random.keyFromSeed(1), 2 * 16 * dim), [2, 16, dim])
    const r = await applyOnHost(q, { params, state, x }, backend)
    if (isLeft(r)) throw r.left
    out[name] = Array.from(r.right.indices.data)
  }
  return out
}

/** Runs the workload on `backend` and throws unless it agrees with the reference; returns a summary line. */
export async function checkBackend(label, backend) {
  const ref = await indicesOn(cpuBackend())
  const got = await indicesOn(backend)
  for (const name of Object.keys(ref)) {
    const bad = ref[name].findIndex((v, i) => v !== got[name][i])
    if (bad >= 0 || got[name].length !== ref[name].length)
      throw new Error(`${label}: ${name} indices differ from the reference at ${bad} (${got[name][bad]} vs ${ref[name][bad]})`)
  }
  return `${label}: ${Object.keys(ref).map((n) => `${n} ${ref[n].length} indices`).join(', ')} equal to the reference`
}

/** safetensors written and read back with no Node API (the browser path of a checkpoint). */
export function safetensorsRoundTrip() {
  const t = tensorOf([1, -2.5, 3, 4], [2, 2])
  const bytes = encodeSafetensors({ 'layer.weight': t }, { note: 'consumer check' })
  const back = getOrThrow(decodeSafetensors(bytes))
  const w = back.tensors['layer.weight']
  if (!w || w.data.some((v, i) => v !== t.data[i]) || back.metadata.note !== 'consumer check')
    throw new Error('safetensors: round trip changed the tensor or metadata')
  return `safetensors: ${bytes.length} bytes round-tripped`
}
