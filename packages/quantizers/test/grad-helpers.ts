import type { Backend, HostTensor, Tensor } from '@tessera/core'
import { valueAndGrad } from '@tessera/core'
import type { Named, QuantizeResult, Quantizer } from '../src/quantizer.js'
import { runOnHost } from '../src/run.js'
import { orThrow } from './helpers.js'

/**
 * Gradients of a quantizer, run on a backend: one traced program computes `apply` and, by
 * reverse-mode autodiff, the gradient of `objective(result, w)` with respect to the input x and
 * the learnable parameters. Everything else the tests check is computed on the host in float64.
 */
export interface GradRun {
  readonly quantized: HostTensor
  readonly indices: HostTensor
  readonly loss: HostTensor
  /** d objective / d x */
  readonly gx: HostTensor
  /** d objective / d params[name] */
  readonly gparams: Named<HostTensor>
}

/** sum(w * quantized): its gradient w.r.t. x is the transposed Jacobian of the output applied to w. */
export const weightedOutput = (r: QuantizeResult, w: Tensor): Tensor => r.quantized.mul(w).sum()

export async function gradRun(
  backend: Backend,
  q: Quantizer,
  init: { readonly params: Named<HostTensor>; readonly state: Named<HostTensor> },
  x: HostTensor,
  w: HostTensor,
  opts: { readonly training: boolean; readonly objective?: (r: QuantizeResult, w: Tensor) => Tensor },
): Promise<GradRun> {
  const objective = opts.objective ?? weightedOutput
  const r = await runOnHost(backend, [init.params, init.state, x, w] as const, (p, s, xx, ww) => {
    const f = (xi: Tensor, pi: Named<Tensor>, si: Named<Tensor>, wi: Tensor) => {
      const res = q.apply(pi, si, xi, { training: opts.training })
      return { loss: objective(res, wi), quantized: res.quantized, indices: res.indices, qloss: res.loss }
    }
    const { value, grad } = valueAndGrad(f, [0, 1] as const)(xx as Tensor, p as Named<Tensor>, s as Named<Tensor>, ww as Tensor)
    return { quantized: value.quantized, indices: value.indices, loss: value.qloss, gx: grad[0], gparams: { ...grad[1] } }
  })
  return orThrow(r) as unknown as GradRun
}

/** Float64 helpers over plain arrays. */
export const dot = (a: readonly number[], b: readonly number[]): number => a.reduce((s, v, i) => s + v * b[i]!, 0)
export const norm = (a: readonly number[]): number => Math.sqrt(dot(a, a))

/**
 * The rotation trick's gradient for one row, in float64: s · Rᵀ w with s = |c|/|x|,
 * R = I − 2vvᵀ + 2quᵀ (u = x/|x|, q = c/|c|, v = (u + q)/|u + q|), from the reference's rotate_to.
 */
export function rotationGrad(x: readonly number[], c: readonly number[], w: readonly number[]): number[] {
  const nx = norm(x), nc = norm(c)
  const u = x.map((v) => v / nx), q = c.map((v) => v / nc)
  const uq = u.map((v, i) => v + q[i]!)
  const v = uq.map((t) => t / norm(uq))
  const vw = dot(v, w), qw = dot(q, w), s = nc / nx
  return w.map((wi, i) => s * (wi - 2 * v[i]! * vw + 2 * u[i]! * qw))
}

export const rows = (t: HostTensor | readonly number[], d: number): number[][] => {
  const data = Array.from('data' in t ? t.data : t)
  return Array.from({ length: data.length / d }, (_, r) => data.slice(r * d, r * d + d))
}

/**
 * Assert |got - want| <= tol * max(1, max |want|) elementwise, reporting the worst element.
 * `want` is float64; `got` is what the float32 program gave.
 */
export function expectNear(got: ArrayLike<number>, want: readonly number[], tol: number, what: string): void {
  if (got.length !== want.length) throw new Error(`${what}: ${got.length} elements, want ${want.length}`)
  const scale = Math.max(1, ...want.map(Math.abs))
  let worst = 0, at = -1
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i]! - want[i]!)
    if (!(e <= worst) || Number.isNaN(e)) {
      worst = Number.isNaN(e) ? Infinity : e
      at = i
    }
  }
  if (!(worst <= tol * scale))
    throw new Error(`${what}: element ${at} is ${got[at]}, want ${want[at]} (|err| ${worst.toExponential(2)} > ${(tol * scale).toExponential(2)})`)
}
