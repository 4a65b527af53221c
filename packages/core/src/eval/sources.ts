import { allocate, sizeOf, stridesOf } from '../dtype.js'
import { fillUniform } from '../random.js'
import { castTo } from '../scalar.js'
import type { ImplTable } from './impl.js'

/** Source primitives in the reference: values made from params (and a key) alone. */
export const sourceImpls: Pick<ImplTable, 'iota' | 'full' | 'constant' | 'random_uniform'> = {
  iota: (_ins, p, out) => {
    const r = allocate(out.dtype, sizeOf(p.shape))
    const st = stridesOf(p.shape)
    const s = st[p.axis]!, d = p.shape[p.axis]!
    for (let i = 0; i < r.length; i++) r[i] = Math.floor(i / s) % d
    return r
  },
  full: (_ins, p, out) => allocate(out.dtype, sizeOf(p.shape)).fill(castTo(out.dtype, p.value)),
  constant: (_ins, p, out) => {
    const r = allocate(out.dtype, p.data.length)
    r.set(p.data)
    return r
  },
  random_uniform: (ins, p) => {
    const k = ins[0]!.data
    return fillUniform(k[0]!, k[1]!, new Float32Array(sizeOf(p.shape)))
  },
}
