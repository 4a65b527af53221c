import * as E from 'fp-ts/lib/Either.js'
import { describe, expect, it } from 'vitest'
import { interpretProgram } from '@tessera/backend-cpu'
import type { Aval, HostTensor, Tensor } from '@tessera/core'
import { tensorOf, traceOrThrow, valueAndGrad } from '@tessera/core'
import type { Optimizer } from '../src/index.js'
import { adam, adamw, sgd } from '../src/index.js'

const ok = <A>(e: E.Either<unknown, A>): A => {
  if (E.isLeft(e)) throw e.left
  return e.right
}

type Rec = Record<string, HostTensor>
const specsOf = (r: Rec): Record<string, Aval> => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, { shape: v.shape, dtype: v.dtype }]))

/** One compiled program per step: loss, gradients and the optimizer update. */
function trainer<C>(opt: Optimizer<C>, params0: Rec, loss: (p: Record<string, Tensor>) => Tensor) {
  const traced = traceOrThrow([specsOf(params0), opt.stateSpecs(specsOf(params0))], (p, s) => {
    const { value, grad } = valueAndGrad(loss)(p)
    const next = opt.update(p, grad, s)
    return { loss: value, params: next.params, state: next.state }
  })
  let params = params0
  let state: Rec = opt.init(params0)
  const losses: number[] = []
  return {
    step() {
      const out = traced.unflattenOutputs(interpretProgram(traced.program, [...Object.values(params), ...Object.values(state)]))
      losses.push(out.loss.data[0]!)
      params = out.params as Rec
      state = out.state as Rec
    },
    get params() {
      return params
    },
    losses,
  }
}

// an ill-conditioned quadratic: sum_i a_i (p_i - c_i)^2 with curvatures 0.5 .. 8
const target = [1.5, -2, 0.25, 3, -0.75, 0.5]
const curv = [0.5, 1, 2, 4, 8, 1.5]
const quadratic = (p: Record<string, Tensor>) => {
  const b = p.w!.builder
  return p.w!.sub(b.constant(target, [6])).square().mul(b.constant(curv, [6])).sum()
}
const start = (): Rec => ({ w: tensorOf([0, 0, 0, 0, 0, 0], [6]) })
const dist = (w: HostTensor) => Math.max(...Array.from(w.data, (v, i) => Math.abs(v - target[i]!)))

describe('optimizers converge on a quadratic', () => {
  it('SGD with momentum', () => {
    const t = trainer(ok(sgd({ lr: 0.02, momentum: 0.9 })), start(), quadratic)
    for (let i = 0; i < 200; i++) t.step()
    expect(dist(t.params.w!)).toBeLessThan(1e-3)
  })
  it('SGD with Nesterov momentum', () => {
    const t = trainer(ok(sgd({ lr: 0.02, momentum: 0.9, nesterov: true })), start(), quadratic)
    for (let i = 0; i < 200; i++) t.step()
    expect(dist(t.params.w!)).toBeLessThan(1e-3)
  })
  it('Adam', () => {
    const t = trainer(ok(adam({ lr: 0.1 })), start(), quadratic)
    for (let i = 0; i < 300; i++) t.step()
    expect(dist(t.params.w!)).toBeLessThan(1e-2)
    expect(t.losses[t.losses.length - 1]!).toBeLessThan(1e-4 * t.losses[0]!)
  })
  it('AdamW (decoupled decay pulls the optimum toward 0 only slightly)', () => {
    const t = trainer(ok(adamw({ lr: 0.1, weight_decay: 1e-3 })), start(), quadratic)
    for (let i = 0; i < 300; i++) t.step()
    expect(dist(t.params.w!)).toBeLessThan(5e-2)
    expect(t.losses[t.losses.length - 1]!).toBeLessThan(1e-3 * t.losses[0]!)
  })
})

/** torch's AdamW in float64, step by step. */
function adamwF64(p0: number[], grads: number[][], c: { lr: number; beta1: number; beta2: number; eps: number; wd: number }) {
  const p = [...p0], m = p0.map(() => 0), v = p0.map(() => 0)
  grads.forEach((g, s) => {
    const t = s + 1
    for (let i = 0; i < p.length; i++) {
      p[i] = p[i]! * (1 - c.lr * c.wd)
      m[i] = c.beta1 * m[i]! + (1 - c.beta1) * g[i]!
      v[i] = c.beta2 * v[i]! + (1 - c.beta2) * g[i]! * g[i]!
      const mHat = m[i]! / (1 - c.beta1 ** t)
      const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - c.beta2 ** t) + c.eps
      p[i] = p[i]! - c.lr * (mHat / denom)
    }
  })
  return p
}

describe('update rules against float64', () => {
  const p0 = [0.5, -1.25, 2, 0.1]
  const grads = [
    [0.3, -0.2, 1.5, -0.01],
    [0.25, 0.1, 1.2, 0.02],
    [-0.4, 0.3, 0.9, -0.03],
    [0.1, -0.05, 0.6, 0.5],
    [0.2, 0.2, -0.3, 0.05],
  ]
  const run = <C>(opt: Optimizer<C>) => {
    const specs = { w: { shape: [4], dtype: 'float32' } as Aval }
    const prog = traceOrThrow([specs, specs, opt.stateSpecs(specs)], (p, g, s) => opt.update(p, g, s))
    let params: Rec = { w: tensorOf(p0, [4]) }
    let state: Rec = opt.init(params)
    for (const g of grads) {
      const out = prog.unflattenOutputs(interpretProgram(prog.program, [params.w!, tensorOf(g, [4]), ...Object.values(state)]))
      params = out.params as Rec
      state = out.state as Rec
    }
    return Array.from(params.w!.data)
  }
  it('AdamW matches a direct float64 computation for 5 steps', () => {
    const c = { lr: 0.01, beta1: 0.8, beta2: 0.95, eps: 1e-6, wd: 0.1 }
    const got = run(ok(adamw({ lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weight_decay: c.wd })))
    const want = adamwF64(p0, grads, c)
    // float32 state: each step is a few ops on O(1) values, 5 steps; 1e-6 absolute is ~10 ulps of 2
    got.forEach((g, i) => expect(Math.abs(g - want[i]!)).toBeLessThan(1e-6))
    // and the decoupled decay matters: plain Adam lands elsewhere
    const adamGot = run(ok(adam({ lr: c.lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps })))
    expect(Math.abs(adamGot[2]! - want[2]!)).toBeGreaterThan(1e-4)
  })
  it('SGD with momentum and dampening matches torch (buffer starts at the first gradient)', () => {
    const lr = 0.1, mu = 0.9, damp = 0.3
    const p = [...p0], buf = p0.map(() => 0)
    grads.forEach((g, s) => {
      for (let i = 0; i < 4; i++) {
        buf[i] = s === 0 ? g[i]! : mu * buf[i]! + (1 - damp) * g[i]!
        p[i] = p[i]! - lr * buf[i]!
      }
    })
    const got = run(ok(sgd({ lr, momentum: mu, dampening: damp })))
    got.forEach((g, i) => expect(Math.abs(g - p[i]!)).toBeLessThan(1e-6))
  })
})

describe('a learning-rate tensor replaces the configured rate (schedules)', () => {
  it.each([
    ['adamw', () => ok(adamw({ lr: 0.05 }))],
    ['sgd', () => ok(sgd({ lr: 0.05, momentum: 0.5 }))],
  ] as const)('%s: lr input 0.05 gives the configured update; 0 leaves the parameters (less decay) alone', (_n, make) => {
    const opt = make() as Optimizer<unknown>
    const specs = { w: { shape: [3], dtype: 'float32' } as Aval }
    const lrSpec: Aval = { shape: [], dtype: 'float32' }
    const withLr = traceOrThrow([specs, specs, opt.stateSpecs(specs), lrSpec], (p, g, s, lr) => opt.update(p as never, g as never, s as never, lr as Tensor).params)
    const fixed = traceOrThrow([specs, specs, opt.stateSpecs(specs)], (p, g, s) => opt.update(p, g, s).params)
    const p = tensorOf([1, -2, 0.5], [3]), g = tensorOf([0.3, 0.1, -0.7], [3])
    const st = Object.values(opt.init({ w: p }))
    const a = interpretProgram(withLr.program, [p, g, ...st, tensorOf([0.05], [])])[0]!.data
    const b = interpretProgram(fixed.program, [p, g, ...st])[0]!.data
    Array.from(a).forEach((v, i) => expect(v).toBeCloseTo(b[i]!, 7))
    expect(Array.from(interpretProgram(withLr.program, [p, g, ...st, tensorOf([0], [])])[0]!.data)).toEqual(Array.from(p.data))
  })
  it('a non-scalar learning rate is refused', () => {
    const opt = ok(adam({}))
    const specs = { w: { shape: [3], dtype: 'float32' } as Aval }
    expect(() =>
      traceOrThrow([specs, specs, opt.stateSpecs(specs), { shape: [3], dtype: 'float32' } as Aval], (p, g, s, lr) => opt.update(p as never, g as never, s as never, lr as Tensor)),
    ).toThrow(/adam\.lr: a learning-rate tensor must be a scalar f32\[\], got float32\[3\]/)
  })
})

describe('hyperparameters are decoded with io-ts', () => {
  it('fills defaults', () => {
    expect(ok(adamw({})).config).toEqual({ lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2 })
    expect(ok(sgd(undefined)).config.momentum).toBe(0)
  })
  it.each([
    [() => adam({ lr: -1 }), 'adam.lr'],
    [() => adamw({ beta2: 1 }), 'adamw.beta2'],
    [() => sgd({ lr: Number.NaN }), 'sgd.lr'],
    [() => adam({ betas: [0.9, 0.99] }), 'adam.betas'],
    [() => sgd({ nesterov: 'yes' }), 'sgd.nesterov'],
  ])('rejects a bad field with an error naming it (%#)', (make, where) => {
    const r = make()
    expect(E.isLeft(r)).toBe(true)
    if (E.isLeft(r)) {
      expect(r.left.kind).toBe('config')
      expect(r.left.where).toBe(where)
    }
  })
})
