// Node ESM consumer: every package imports by its published name and runs.
import { fusedCpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { gpuJsBackend, gpuJsUnavailable } from '@tessera/backend-gpujs'
import { backendNames } from '@tessera/cli'
import { getOrThrow, runOrThrow, tensorOf, traceOrThrow, random } from '@tessera/core'
import { mlp } from '@tessera/nn'
import { checkBackend, safetensorsRoundTrip } from './workload.js'

const lines = []
lines.push(await checkBackend('fused-cpu', fusedCpuBackend()))
const fast = fastBackend({ threads: 2 })
lines.push(await checkBackend('fast', fast))
fast.dispose?.()
const why = await gpuJsUnavailable('cpu')
if (why) throw new Error(`gpu.js cpu mode unavailable in Node: ${why}`)
const gpu = gpuJsBackend('cpu')
lines.push(await checkBackend('gpujs-cpu', gpu))
gpu.dispose?.()
lines.push(safetensorsRoundTrip())

const net = mlp([4, 8, 2])
const params = net.init(random.keyFromSeed(0))
const names = Object.keys(params)
const { program } = traceOrThrow([names.map((k) => params[k]), { shape: [3, 4], dtype: 'float32' }], (ps, x) =>
  net.apply(Object.fromEntries(names.map((k, i) => [k, ps[i]])), x),
)
const [y] = await runOrThrow(program, [...names.map((k) => params[k]), tensorOf(new Float32Array(12).fill(0.5), [3, 4])], fastBackend({ threads: 1 }))
if (y.shape.join() !== '3,2') throw new Error(`nn: mlp output shape ${y.shape}`)
lines.push(`nn: mlp [4, 8, 2] output ${y.dtype}[${y.shape}]`)
if (!backendNames.includes('fast')) throw new Error('cli: backendNames lacks fast')
getOrThrow({ _tag: 'Right', right: 1 })
console.log(lines.join('\n'))
