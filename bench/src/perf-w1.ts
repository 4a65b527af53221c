import { fastBackend } from '@tessera/backend-fast'
import { nearestProgram } from './programs.js'
const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1)
const t = (s: number[]) => ({ shape: s, dtype: 'float32' as const, data: rnd(s[0]! * s[1]!) })
const exe = fastBackend({ threads: Number(process.env.T ?? 2) }).compile(nearestProgram(16384, 64, 1024)); const ins = [t([16384, 64]), t([1024, 64])]
for (let i = 0; i < 3; i++) await exe.run(ins)
const ts = []
for (let i = 0; i < 9; i++) { const t0 = performance.now(); await exe.run(ins); ts.push(performance.now() - t0) }
ts.sort((a, b) => a - b); console.log('W1 min', ts[0]!.toFixed(1), 'med', ts[4]!.toFixed(1))
