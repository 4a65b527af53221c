import * as E from 'fp-ts/lib/Either.js'
import type { Aval } from './dtype.js'
import { fmtAval, shapeEq } from './dtype.js'
import { TesseraError } from './error.js'
import type { HostTensor } from './host-tensor.js'
import { checkHostTensor, describeValue } from './host-tensor.js'

/** Options of one call of an executable. */
export interface RunOptions {
  /**
   * Per output, a host tensor to write that output into instead of a fresh array: its shape and
   * dtype are the output's, and the result returned for it holds this very array. A loop that
   * alternates two sets of buffers (a training loop's parameters and optimizer state) then
   * allocates nothing per call. An entry may be undefined (that output gets a fresh array); an
   * array given must share no memory with any input or with another entry. A call that fails may
   * have written part of them.
   */
  readonly into?: readonly (HostTensor | undefined)[]
}

const overlap = (a: ArrayBufferView, b: ArrayBufferView) =>
  a.buffer === b.buffer && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength && a.byteLength > 0 && b.byteLength > 0

/**
 * Names for checkInto's messages: an entry's path in the tree it came from (`into.state.embed`)
 * and the inputs' (`args[1].x`), where the caller has them; else `into[i]` and `input i`.
 */
export interface IntoNames {
  readonly into?: readonly string[]
  readonly inputs?: readonly string[]
}

/**
 * Checks `into` against a program's outputs and the call's inputs (see RunOptions): the Left
 * names the entry and what is wrong with it.
 */
export function checkInto(where: string, outputs: readonly Aval[], inputs: readonly HostTensor[], into: RunOptions['into'], names?: IntoNames): E.Either<TesseraError, void> {
  if (into === undefined) return E.right(undefined)
  const bad = (msg: string) => E.left(new TesseraError('input', where, msg))
  const entry = (i: number) => names?.into?.[i] ?? `into[${i}]`
  if (!Array.isArray(into)) return bad(`into must be an array (one entry per output, undefined where a fresh array is wanted), got ${describeValue(into)}`)
  if (into.length > outputs.length) return bad(`into has ${into.length} entries; the program has ${outputs.length} output(s)`)
  // only views of one buffer can overlap: each entry is compared with the inputs and the earlier
  // entries on its own buffer (in index order, so the first overlap found is the lowest index),
  // not with all of them (a training step has dozens of each, every step)
  const inputsOn = new Map<ArrayBufferLike, number[]>()
  if (Array.isArray(inputs))
    inputs.forEach((x, j) => {
      if (ArrayBuffer.isView(x?.data)) pushTo(inputsOn, x.data.buffer, j)
    })
  const entriesOn = new Map<ArrayBufferLike, number[]>()
  for (let i = 0; i < into.length; i++) {
    const t = into[i]
    if (t === undefined) continue
    const ok = checkHostTensor(t, entry(i), where)
    if (E.isLeft(ok)) return ok
    const want = outputs[i]!
    if (t.dtype !== want.dtype || !shapeEq(t.shape, want.shape)) return bad(`${entry(i)} is ${fmtAval(t)}; ${names?.into ? 'that output' : `output ${i}`} is ${fmtAval(want)}`)
    const input = inputsOn.get(t.data.buffer)?.find((j) => overlap(inputs[j]!.data, t.data))
    if (input !== undefined) return bad(`${entry(i)} shares memory with ${names?.inputs?.[input] ?? `input ${input}`}: an output may not be written over an input the call still reads`)
    const earlier = entriesOn.get(t.data.buffer)?.find((j) => overlap(into[j]!.data, t.data))
    if (earlier !== undefined) return bad(`${entry(i)} shares memory with ${entry(earlier)}`)
    pushTo(entriesOn, t.data.buffer, i)
  }
  return E.right(undefined)
}

function pushTo<K, V>(m: Map<K, V[]>, k: K, v: V): void {
  const list = m.get(k)
  if (list) list.push(v)
  else m.set(k, [v])
}

/**
 * As checkInto, throwing the TesseraError: for an executable's `run` (the `run` boundary returns
 * the Left). `outputs` is asked for only when `into` is given, so a call without it pays nothing.
 */
export function checkIntoOrThrow(where: string, outputs: () => readonly Aval[], inputs: readonly HostTensor[], into: RunOptions['into']): void {
  if (into === undefined) return
  const ok = checkInto(where, outputs(), inputs, into)
  if (E.isLeft(ok)) throw ok.left
}

/**
 * Copies computed outputs into the arrays `into` gives (see RunOptions) and returns the results
 * holding them: for backends that compute each output into arrays of their own.
 */
export function writeInto(outputs: readonly HostTensor[], into: RunOptions['into']): HostTensor[] {
  if (into === undefined) return [...outputs]
  return outputs.map((o, i) => {
    const t = into[i]
    if (t === undefined) return o
    ;(t.data as Float32Array).set(o.data as Float32Array)
    return { shape: o.shape, dtype: o.dtype, data: t.data } as HostTensor
  })
}
