import * as E from 'fp-ts/lib/Either.js'
import * as t from 'io-ts'
import type { Tensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import { PositiveInt, decode, strict } from '../config/codec.js'
import { CONFIG_BUFFERS, quantizerCaseRunner, withCaseNames } from '../golden/generic-case.js'
import type { CaseRunner } from '../golden/runner.js'
import type { Quantizer } from '../quantizer.js'
import type { SequentialPart } from './sequential.js'
import { linearStage, sequential } from './sequential.js'

/** A module of `constructor.args`: the reference's class name and keyword arguments. */
const ModuleJson = t.type({ class: t.string, kwargs: t.union([t.record(t.string, t.unknown), t.null]) })

const LinearKwargs = strict('torch.nn.Linear', { in_features: PositiveInt, out_features: PositiveInt }, { bias: t.boolean })

/** Quantizer factories by the reference's class name, for the modules a case lists. */
export type QuantizerFactories = Readonly<Record<string, (options: unknown) => E.Either<TesseraError, Quantizer>>>

/** One module of a Sequential case: `torch.nn.Linear`, or a quantizer class the factories know. */
function partOf(json: unknown, i: number, factories: QuantizerFactories): E.Either<TesseraError, SequentialPart> {
  const m = decode(ModuleJson, json, `golden.constructor.args[${i}]`)
  if (E.isLeft(m)) return m
  const kwargs = m.right.kwargs ?? {}
  if (m.right.class === 'torch.nn.Linear') {
    const k = decode(LinearKwargs, kwargs)
    return E.map((o: t.TypeOf<typeof LinearKwargs>) => linearStage(o.in_features, o.out_features, o.bias ?? true))(k)
  }
  const build = Object.prototype.hasOwnProperty.call(factories, m.right.class) ? factories[m.right.class] : undefined
  if (!build) return E.left(new TesseraError('input', `golden.constructor.args[${i}]`, `module ${m.right.class} is not in the library`))
  return build(kwargs)
}

/**
 * Sequential cases: the parts come from `constructor.args`; outputs are the combinator's
 * (`quantized`, `indices`) and each part's hook output `fns.{i}_output`.
 */
export function sequentialCaseRunner(factories: QuantizerFactories): CaseRunner {
  return (c, ctx) => {
    const parts: SequentialPart[] = []
    for (const [i, a] of c.args.entries()) {
      const p = partOf(a, i, factories)
      if (E.isLeft(p)) return Promise.resolve(p)
      parts.push(p.right)
    }
    const runner = quantizerCaseRunner(() => sequential(parts), {
      derived: CONFIG_BUFFERS,
      outputs: (_q, res) => {
        const hooks: Record<string, Tensor> = {}
        for (const [k, v] of Object.entries(withCaseNames(res.extra))) {
          const m = /^fns\.(\d+)\.output$/.exec(k)
          if (m) hooks[`fns.${m[1]}_output`] = v
        }
        return hooks
      },
    })
    return runner(c, ctx)
  }
}
