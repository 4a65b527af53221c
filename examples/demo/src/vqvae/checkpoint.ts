import * as E from 'fp-ts/lib/Either.js'
import type { HostTensor } from '@tessera/core'
import { TesseraError } from '@tessera/core'
import { prefixed, scoped } from '@tessera/nn'
import { decodeSafetensors, encodeSafetensors } from '@tessera/quantizers'
import type { VqVae } from './model.js'

/**
 * A trained model as one safetensors file: `params.*` and `state.*` tensors, and the demo's
 * settings in the header metadata so a loader can rebuild the same model.
 */
export interface CheckpointMeta {
  readonly quantizer: string
  readonly tokens: number
  readonly hidden: number
}

export function encodeCheckpoint(params: Readonly<Record<string, HostTensor>>, state: Readonly<Record<string, HostTensor>>, meta: CheckpointMeta): Uint8Array {
  return encodeSafetensors(
    { ...prefixed(params, 'params.'), ...prefixed(state, 'state.') },
    { format: 'tessera-vqvae-mnist', quantizer: meta.quantizer, tokens: String(meta.tokens), hidden: String(meta.hidden) },
  )
}

export function readCheckpointMeta(bytes: Uint8Array): E.Either<TesseraError, CheckpointMeta> {
  const d = decodeSafetensors(bytes)
  if (E.isLeft(d)) return d
  const m = d.right.metadata
  if (m['format'] !== 'tessera-vqvae-mnist')
    return E.left(new TesseraError('input', 'checkpoint', `not a demo checkpoint (format ${JSON.stringify(m['format'])})`))
  return E.right({ quantizer: m['quantizer'] ?? '', tokens: Number(m['tokens']), hidden: Number(m['hidden']) })
}

/** Load a checkpoint for `model`, checking every tensor's name, shape and dtype against it. */
export function decodeCheckpoint(
  bytes: Uint8Array,
  model: VqVae,
): E.Either<TesseraError, { params: Record<string, HostTensor>; state: Record<string, HostTensor> }> {
  const d = decodeSafetensors(bytes)
  if (E.isLeft(d)) return d
  const params = scoped(d.right.tensors, 'params.')
  const state = scoped(d.right.tensors, 'state.')
  const check = (what: string, got: Record<string, HostTensor>, specs: Record<string, { shape: readonly number[]; dtype: string }>) => {
    for (const [k, s] of Object.entries(specs)) {
      const t = got[k]
      if (!t) return new TesseraError('input', 'checkpoint', `${what}.${k} is missing`)
      if (t.dtype !== s.dtype || t.shape.join(',') !== s.shape.join(','))
        return new TesseraError('input', 'checkpoint', `${what}.${k} is ${t.dtype}[${t.shape.join(',')}]; the model needs ${s.dtype}[${s.shape.join(',')}]`)
    }
    const extra = Object.keys(got).find((k) => !(k in specs))
    return extra ? new TesseraError('input', 'checkpoint', `${what}.${extra} is not part of the model`) : undefined
  }
  const bad = check('params', params, model.paramSpecs()) ?? check('state', state, model.stateSpecs())
  return bad ? E.left(bad) : E.right({ params, state })
}
