/**
 * `pnpm bench:compile`: how planning and compiling scale with the program. A ResidualVQ training
 * step (dim 32, 128 codes, batch 512, key-drawing options off) with 8 to 64 layers: the time to
 * trace it, the reference's first call, and per backend the time to compile (plan and generate
 * code) and the first call. Each figure is the best of three fresh traces in this process.
 */
import { fastBackend } from '@tessera/backend-fast'
import { gpuJsBackend } from '@tessera/backend-gpujs'
import { cpuBackend } from '@tessera/backend-cpu'
import type { Backend, HostTensor, Program } from '@tessera/core'
import { random, tensorOf, traceOrThrow } from '@tessera/core'
import { residualVQ } from '@tessera/quantizers'
import * as E from 'fp-ts/lib/Either.js'

const layers = (process.argv[2] ?? '8,16,32,64').split(',').map(Number)
const N = 512, D = 32, K = 128

function traced(L: number): { program: Program; inputs: HostTensor[]; ms: number } {
  const made = residualVQ({ dim: D, codebook_size: K, num_quantizers: L })
  if (E.isLeft(made)) throw made.left
  const q = made.right
  const t0 = performance.now()
  const { program } = traceOrThrow(
    [q.paramSpecs, q.stateSpecs, { shape: [1, N, D], dtype: 'float32' as const }, { shape: [2], dtype: 'int32' as const }],
    (p, s, x, key) => {
      const r = q.apply(p as never, s as never, x as never, { training: true, key: key as never })
      return [r.quantized, r.indices, r.loss, r.state]
    },
  )
  const ms = performance.now() - t0
  const init = q.init(random.keyFromSeed(1))
  const x = tensorOf(random.normalHost(random.keyFromSeed(2), N * D), [1, N, D])
  return { program, inputs: [...Object.values(init.params), ...Object.values(init.state), x, tensorOf([1, 2], [2], 'int32')], ms }
}

async function measure(make: () => Backend, program: Program, inputs: HostTensor[]): Promise<{ compile: number; first: number }> {
  const backend = make()
  const t0 = performance.now()
  const exe = backend.compile(program)
  const t1 = performance.now()
  await exe.run(inputs)
  const t2 = performance.now()
  await exe.dispose()
  await backend.dispose?.()
  return { compile: t1 - t0, first: t2 - t1 }
}

const best = async <T extends Record<string, number>>(f: () => Promise<T>): Promise<T> => {
  let out: T | undefined
  for (let i = 0; i < 3; i++) {
    const r = await f()
    out = out ? (Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.min(v, out![k]!)])) as T) : r
  }
  return out!
}

console.log('| layers | equations | trace ms | reference first call ms | fast compile ms | fast first call ms | gpujs-cpu compile ms | gpujs-cpu first call ms |')
console.log('|---|---|---|---|---|---|---|---|')
for (const L of layers) {
  const r = await best(async () => {
    const t = traced(L)
    const ref = await measure(() => cpuBackend(), t.program, t.inputs)
    const fast = await measure(() => fastBackend({ threads: 1 }), t.program, t.inputs)
    const gpu = await measure(() => gpuJsBackend('cpu'), t.program, t.inputs)
    return { trace: t.ms, eqns: t.program.eqns.length, ref: ref.compile + ref.first, fastC: fast.compile, fastF: fast.first, gpuC: gpu.compile, gpuF: gpu.first }
  })
  const f = (v: number) => v.toFixed(0)
  console.log(`| ${L} | ${r.eqns} | ${f(r.trace)} | ${f(r.ref)} | ${f(r.fastC)} | ${f(r.fastF)} | ${f(r.gpuC)} | ${f(r.gpuF)} |`)
}
