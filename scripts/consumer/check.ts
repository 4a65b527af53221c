// Type-checked (never run) against the installed packages under strict settings, with NodeNext and
// with bundler resolution: the published .d.ts files must give real types, not `any`.
import { cpuBackend, fusedCpuBackend } from '@tessera/backend-cpu'
import { fastBackend, type FastBackendOptions } from '@tessera/backend-fast'
import { gpuJsBackend, gpuJsUnavailable, type GpuJsBackend, type GpuJsMode } from '@tessera/backend-gpujs'
import { backendNames } from '@tessera/cli'
import {
  getOrThrow,
  isLeft,
  isRight,
  random,
  tensorOf,
  traceOrThrow,
  type Backend,
  type Either,
  type HostTensor,
  type TesseraError,
} from '@tessera/core'
import { adam, mlp } from '@tessera/nn'
import { applyOnHost, fsq, type HostApplyResult, type Quantizer } from '@tessera/quantizers'

const made: Either<TesseraError, Quantizer> = fsq({ levels: [8, 5, 5, 5] })
if (isRight(made)) {
  const kind: string = made.right.kind
  void kind
}
const q = getOrThrow(fsq({ levels: [8, 5, 5, 5] }))
const { params, state } = q.init(random.keyFromSeed(0))
const x: HostTensor = tensorOf(random.normalHost(random.keyFromSeed(1), 2 * 16 * 4), [2, 16, 4])
const opts: FastBackendOptions = { threads: 1 }
const backends: Backend[] = [cpuBackend(), fusedCpuBackend(), fastBackend(opts)]
for (const b of backends) {
  const r = await applyOnHost(q, { params, state, x }, b)
  if (isLeft(r)) throw r.left
  const out: HostApplyResult = r.right
  const firstIndex: number | undefined = out.indices.data[0]
  void firstIndex
}

const mode: GpuJsMode = 'webgl2'
// @ts-expect-error not a gpu.js mode: the published union is checked, not widened to string
const wrong: GpuJsMode = 'opengl'
void wrong
const why: string | undefined = await gpuJsUnavailable(mode)
if (!why) {
  const g: GpuJsBackend = gpuJsBackend(mode)
  g.dispose?.()
}

// @ts-expect-error traceOrThrow needs specs, not a bare function
traceOrThrow((t: unknown) => t)
const { program } = traceOrThrow([{ shape: [3], dtype: 'float32' }] as const, (t) => t.square().sum())
void program

const net = mlp([4, 8, 2], 'gelu')
const opt = getOrThrow(adam({ lr: 1e-3 }))
const p0 = net.init(random.keyFromSeed(2))
const s0: Record<string, HostTensor> = opt.init(p0)
void s0
const names: readonly string[] = backendNames
void names
