import type { Aval, Backend, Executable, HostTensor, Program, Tensor } from '@tessera/core'
import { TesseraError, eliminateDeadCode, traceOrThrow, valueAndGrad } from '@tessera/core'
import type { Named, Optimizer } from '@tessera/nn'
import { describeProbe, probeFinite } from '@tessera/quantizers'
import type { VqVae } from './model.js'
import { IMAGE_SIZE } from './digits.js'

/**
 * The programs the demo runs: one training step (forward, gradients by reverse-mode autodiff
 * and the optimizer update, all one program) and an evaluation pass. Inputs and outputs are
 * flat lists in a fixed name order so the host side can keep plain records.
 */
export interface StepIO {
  readonly paramNames: readonly string[]
  readonly optNames: readonly string[]
  readonly stateNames: readonly string[]
}

const KEY: Aval = { shape: [2], dtype: 'int32' }
const LR: Aval = { shape: [], dtype: 'float32' }
const pick = (r: Named<Tensor>, names: readonly string[]) => Object.fromEntries(names.map((n) => [n, r[n]!]))
const listOf = (r: Named<HostTensor>, names: readonly string[], what: string) =>
  names.map((n) => {
    const t = r[n]
    if (!t) throw new TesseraError('input', 'demo', `${what} has no entry ${n}`)
    return t
  })

/**
 * Arrays a step writes its new parameters, optimizer state and quantizer state into (the
 * executable's `into`), by name; each must share no memory with the step's inputs. A loop that
 * alternates two such sets allocates nothing per step.
 */
export interface StepInto {
  readonly params?: Named<HostTensor>
  readonly opt?: Named<HostTensor>
  readonly state?: Named<HostTensor>
}

export interface TrainStep {
  readonly program: Program
  run(params: Named<HostTensor>, opt: Named<HostTensor>, state: Named<HostTensor>, x: HostTensor, key: HostTensor, lr: HostTensor, into?: StepInto): Promise<{
    loss: number
    mse: number
    indices: HostTensor
    params: Record<string, HostTensor>
    opt: Record<string, HostTensor>
    state: Record<string, HostTensor>
    /** What was not finite (the batch, the loss, new quantizer state or parameters), computed in the step; undefined when all is. */
    nonFinite?: string
  }>
  dispose(): void
}

export function buildTrainStep(model: VqVae, opt: Optimizer<unknown>, batch: number, backend: Backend): TrainStep {
  const pSpecs = model.paramSpecs()
  const oSpecs = opt.stateSpecs(pSpecs)
  const sSpecs = model.stateSpecs()
  const io: StepIO = { paramNames: Object.keys(pSpecs), optNames: Object.keys(oSpecs), stateNames: Object.keys(sSpecs) }
  const x: Aval = { shape: [batch, IMAGE_SIZE], dtype: 'float32' }

  const lossFn = (params: Named<Tensor>, state: Named<Tensor>, images: Tensor, key: Tensor) => {
    const f = model.forward(params, state, images, { training: true, key })
    const mse = f.recon.sub(images).square().mean()
    return { loss: mse.add(f.quantizerLoss), mse, indices: f.indices, state: f.state }
  }
  let probeInfo: { inputSize: number; labels: readonly string[] } = { inputSize: 0, labels: [] }
  const traced = traceOrThrow(
    [pSpecs, oSpecs, sSpecs, x, KEY, LR] as const,
    (p, o, s, images, key, lr) => {
      const params = pick(p as Named<Tensor>, io.paramNames)
      const { value, grad } = valueAndGrad(lossFn)(params, pick(s as Named<Tensor>, io.stateNames), images as Tensor, key as Tensor)
      const next = opt.update(params, grad, pick(o as Named<Tensor>, io.optNames), lr as Tensor)
      // the quantizers' finite-input check, fused into the step: the batch, the loss and every new
      // state entry and parameter, so a diverging run is caught before its results are adopted
      const probe = probeFinite(images as Tensor, [
        ['loss', value.loss],
        ...io.stateNames.map((n) => [`quantizer state ${n}`, value.state[n]!] as const),
        ...io.paramNames.map((n) => [`parameter ${n}`, next.params[n]!] as const),
      ])
      probeInfo = { inputSize: probe.inputSize, labels: probe.labels }
      return [
        value.loss, value.mse, value.indices,
        io.paramNames.map((n) => next.params[n]!),
        io.optNames.map((n) => next.state[n]!),
        io.stateNames.map((n) => value.state[n]!),
        probe.first,
      ]
    },
  )
  const program = eliminateDeadCode(traced.program)
  const exe: Executable = backend.compile(program)
  const np = io.paramNames.length, no = io.optNames.length
  return {
    program,
    async run(params, optState, state, images, key, lr, into) {
      const given = (r: Named<HostTensor> | undefined, names: readonly string[], what: string) =>
        r ? listOf(r, names, what) : names.map(() => undefined)
      const outs = await exe.run(
        [
          ...listOf(params, io.paramNames, 'params'), ...listOf(optState, io.optNames, 'optimizer state'),
          ...listOf(state, io.stateNames, 'quantizer state'), images, key, lr,
        ],
        into && {
          into: [
            undefined, undefined, undefined,
            ...given(into.params, io.paramNames, 'into.params'), ...given(into.opt, io.optNames, 'into.opt'), ...given(into.state, io.stateNames, 'into.state'),
          ],
        },
      )
      const rec = (names: readonly string[], from: number) => Object.fromEntries(names.map((n, i) => [n, outs[from + i]!]))
      const nonFinite = describeProbe(outs[outs.length - 1]!.data[0]!, probeInfo.inputSize, probeInfo.labels, images, 'the batch')
      return {
        ...(nonFinite !== undefined ? { nonFinite } : {}),
        loss: outs[0]!.data[0]!,
        mse: outs[1]!.data[0]!,
        indices: outs[2]!,
        params: rec(io.paramNames, 3),
        opt: rec(io.optNames, 3 + np),
        state: rec(io.stateNames, 3 + np + no),
      }
    },
    dispose: () => exe.dispose(),
  }
}

export interface EvalPass {
  readonly program: Program
  run(params: Named<HostTensor>, state: Named<HostTensor>, x: HostTensor): Promise<{ recon: HostTensor; indices: HostTensor }>
  dispose(): void
}

/** Reconstruction and indices in eval mode (no state change, no auxiliary losses). */
export function buildEval(model: VqVae, batch: number, backend: Backend): EvalPass {
  const pSpecs = model.paramSpecs()
  const sSpecs = model.stateSpecs()
  const paramNames = Object.keys(pSpecs), stateNames = Object.keys(sSpecs)
  const x: Aval = { shape: [batch, IMAGE_SIZE], dtype: 'float32' }
  let probeInfo: { inputSize: number; labels: readonly string[] } = { inputSize: 0, labels: [] }
  const traced = traceOrThrow([pSpecs, sSpecs, x] as const, (p, s, images) => {
    const f = model.forward(pick(p as Named<Tensor>, paramNames), pick(s as Named<Tensor>, stateNames), images as Tensor, { training: false })
    return [f.recon, f.indices]
  })
  const program = eliminateDeadCode(traced.program)
  const exe = backend.compile(program)
  return {
    program,
    async run(params, state, images) {
      const [recon, indices] = await exe.run([...listOf(params, paramNames, 'params'), ...listOf(state, stateNames, 'quantizer state'), images])
      return { recon: recon!, indices: indices! }
    },
    dispose: () => exe.dispose(),
  }
}
