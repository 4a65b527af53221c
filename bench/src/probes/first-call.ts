/**
 * One fresh process's first call, phase by phase: argv <OVH|W1|W1b|W2|W3a|W3b|RVQ|TRAIN>
 * <cpu|fast1|fast2>. Prints load + backend, trace, compile, first run and the median of 9 more
 * calls, in ms (TRAIN: load + backend, setup (parameters, trace and compile), first run).
 * Run through `pnpm bench:probe first-call ...`, which bundles it as the bench's child is.
 */
import type { Backend, HostTensor } from '@tessera/core'
import { workloads } from '../workloads.js'
import { overheadProgram } from '../programs.js'

const [wid, impl] = [process.argv[2] ?? 'OVH', process.argv[3] ?? 'fast1']
const ms = (a: number, b: number) => (b - a).toFixed(1)
const t0 = performance.now()
const backend: Backend =
  impl === 'cpu'
    ? (await import('@tessera/backend-cpu')).cpuBackend()
    : (await import('@tessera/backend-fast')).fastBackend({ threads: impl === 'fast2' ? 2 : 1, relaxedSimd: false })
const t1 = performance.now()
if (wid === 'TRAIN') {
  const { trainRunner } = await import('../train.js')
  const r = await trainRunner(backend, false)
  const t2 = performance.now()
  await r.run()
  console.log(wid, impl, 'load+backend', ms(t0, t1), 'setup', ms(t1, t2), 'first run', ms(t2, performance.now()))
} else {
  const w = workloads.find((x) => x.id === wid)
  if (!w && wid !== 'OVH') throw new Error(`unknown workload ${wid}`)
  const ins: HostTensor[] = w ? w.inputs(false).map((t) => ({ shape: t.shape, dtype: 'float32', data: t.data })) : [{ shape: [4], dtype: 'float32', data: new Float32Array(4) }]
  const t2 = performance.now()
  const program = w ? w.tessera(false) : overheadProgram()
  const t3 = performance.now()
  const exe = backend.compile(program)
  const t4 = performance.now()
  await exe.run(ins)
  const t5 = performance.now()
  const rest: number[] = []
  for (let i = 0; i < 9; i++) {
    const a = performance.now()
    await exe.run(ins)
    rest.push(performance.now() - a)
  }
  rest.sort((a, b) => a - b)
  console.log(wid, impl, 'load+backend', ms(t0, t1), 'trace', ms(t2, t3), 'compile', ms(t3, t4), 'first run', ms(t4, t5), 'trace+compile+first', ms(t2, t5), 'steady', rest[4]!.toFixed(2))
}
await backend.dispose?.()
process.exit(0)
