// scratch: W1 tessera fast (1 thread) vs onnxruntime-node, interleaved so contention hits both alike
import { fastBackend } from '@tessera/backend-fast'
import * as ort from 'onnxruntime-node'
import { workloads } from './workloads.js'
import { encodeModel } from './onnx/proto.js'
const w = workloads.find((x) => x.id === (process.env.W ?? 'W1'))!
const ins = w.inputs(false)
const exe = fastBackend({ threads: Number(process.env.T ?? 1) }).compile(w.tessera(false))
const hosts = ins.map((t) => ({ shape: t.shape, dtype: 'float32' as const, data: t.data }))
const g = w.onnx(false)
const s = await ort.InferenceSession.create(encodeModel(g), { intraOpNumThreads: Number(process.env.T ?? 1) })
const feeds: any = {}; g.inputs.forEach((v, i) => (feeds[v.name] = new ort.Tensor('float32', ins[i]!.data, ins[i]!.shape)))
const a: number[] = [], b: number[] = []
for (let i = 0; i < 12; i++) {
  let t = performance.now(); await exe.run(hosts); a.push(performance.now() - t)
  t = performance.now(); await s.run(feeds); b.push(performance.now() - t)
}
const med = (x: number[]) => x.slice(2).sort((p, q) => p - q)[Math.floor((x.length - 2) / 2)]!
console.log(`${w.id} fast ${med(a).toFixed(1)} ort ${med(b).toFixed(1)} ratio ${(med(a) / med(b)).toFixed(2)}`)
process.exit(0)
