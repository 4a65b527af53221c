import * as E from 'fp-ts/lib/Either.js'
import { TesseraError, asTesseraError } from './error.js'
import type { HostTensor } from './host-tensor.js'
import { checkAvals } from './host-tensor.js'
import type { Program } from './program.js'
import type { RunOptions } from './run-into.js'
import { checkInto } from './run-into.js'

/**
 * What differs between targets. Lowering and test tolerances read these; nothing may branch on
 * a backend's name.
 */
export interface Caps {
  /** Integers (indices, sizes) must stay below this to be exact (2^24 where ints live in floats). */
  readonly exactIntLimit: number
  /** NaN and Inf propagate exactly as in the reference. */
  readonly strictNaN: boolean
  /** Most inputs one kernel may take (Infinity where there are no kernels). */
  readonly maxKernelArgs: number
  /** Largest texture side, or Infinity. */
  readonly maxTextureSize: number
  /** Agreement with the reference for one float op: |got - want| <= atol + rtol * |want|. */
  readonly atol: number
  readonly rtol: number
  /** Extra relative error allowed for transcendental functions (exp, log, tanh, pow, ...). */
  readonly transcendentalRtol: number
  /** Whether the backend executes fused kernels (so kernel counts mean something). */
  readonly fuses: boolean
  /**
   * Most iterations a kernel's loop may run in one invocation, counted across every run of the
   * loops around it: Mesa's llvmpipe keeps one counter per shader loop and silently stops the
   * loop at 65535. Lowering makes longer loops take several elements an iteration. Absent: no limit.
   */
  readonly maxLoop?: number
}

/** A program compiled by a backend: run it many times, dispose it when done. */
export interface Executable {
  /** Runs the program on host inputs; `options.into` writes outputs into arrays the caller gives (RunOptions). */
  run(inputs: readonly HostTensor[], options?: RunOptions): Promise<HostTensor[]>
  /** Frees what the executable holds (worker threads, kernels); resolves once they are freed. */
  dispose(): void | Promise<void>
}

/** A backend is a value you pass; there is no registry. */
export interface Backend {
  readonly name: string
  readonly caps: Caps
  compile(program: Program): Executable
  /**
   * Frees the backend's resources (a GPU context, worker threads) and resolves once they are
   * freed. Afterwards `compile`, and `run` of any executable it compiled, fail with a
   * TesseraError of kind `backend` (see `disposedError`).
   */
  dispose?(): Promise<void>
}

/** What a disposed backend answers to `compile` or to running one of its executables. */
export const disposedError = (backend: string): TesseraError =>
  new TesseraError('backend', backend, 'this backend was disposed; create a new one to run programs')

/** The boundary: check inputs against the program, run, and return errors as a Left. */
export async function run(
  program: Program,
  inputs: readonly HostTensor[],
  backend: Backend,
  options?: RunOptions,
): Promise<E.Either<TesseraError, HostTensor[]>> {
  const ok = checkAvals('run', program.inputs.map((v) => v.aval), inputs)
  if (E.isLeft(ok)) return ok
  const into = checkInto('run', program.outputs.map((v) => v.aval), inputs, options?.into)
  if (E.isLeft(into)) return into
  let exe: Executable | undefined
  try {
    exe = backend.compile(program)
    return E.right(await exe.run(inputs, options))
  } catch (e) {
    return E.left(asTesseraError(e, `run(${backend.name})`))
  } finally {
    exe?.dispose()
  }
}

/** As `run`, throwing the error: for scripts and tests. */
export async function runOrThrow(program: Program, inputs: readonly HostTensor[], backend: Backend, options?: RunOptions): Promise<HostTensor[]> {
  const r = await run(program, inputs, backend, options)
  if (E.isLeft(r)) throw r.left
  return r.right
}
