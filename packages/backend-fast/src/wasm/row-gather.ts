import { Code, I32, assemble } from './asm.js'

/*
 * The row copy of a gather of whole rows, as a WebAssembly function over one memory (bulk
 * memory's memory.copy a row): gather-step.ts's copy memory and the elementwise passes that
 * gather their own operands (elem-kernel.ts) both run it.
 */

/**
 * `gather(tab, ix, out, n, rowBytes, d, err)`: for j < n, the row at tab + ix[j] * rowBytes to
 * out + j * rowBytes; at the first ix[j] outside [0, d) (unsigned compare), j is stored at err and
 * the copy stops (else err holds -1).
 */
function gatherCode(): Code {
  const c = new Code(7)
  const [tab, ix, out, n, rb, d, err] = [0, 1, 2, 3, 4, 5, 6]
  const j = c.local(I32), v = c.local(I32)
  c.get(err).i32(-1).i32Store()
  c.block()
  c.loop()
  c.get(n).get(j).i32LeU().brIf(1)
  c.get(ix).get(j).i32(4).i32Mul().i32Add().i32Load().set(v)
  c.block()
  c.get(v).get(d).i32LtU().brIf(0)
  c.get(err).get(j).i32Store()
  c.br(2)
  c.end()
  c.get(out).get(j).get(rb).i32Mul().i32Add()
  c.get(tab).get(v).get(rb).i32Mul().i32Add()
  c.get(rb).memoryCopy()
  c.get(j).i32(1).i32Add().set(j)
  c.br(0)
  c.end()
  c.end()
  return c
}

/** `gather(tab, ix, out, n, rowBytes, d, err)`, as gatherCode describes. */
export type RowGather = (tab: number, ix: number, out: number, n: number, rowBytes: number, d: number, err: number) => void

/** The row copy over `memory` (of `pages` pages, not shared). */
export function rowGatherOn(memory: WebAssembly.Memory, pages: number): RowGather {
  const module = new WebAssembly.Module(assemble(pages, [{ name: 'gather', code: gatherCode() }], false) as BufferSource)
  return new WebAssembly.Instance(module, { env: { memory } }).exports['gather'] as RowGather
}

/** A float32 or int32 array's elements as int32 bits (copies move bits, NaN payloads included). */
export function int32Bits(a: ArrayLike<number>): Int32Array {
  const t = a as Float32Array | Int32Array
  return new Int32Array(t.buffer, t.byteOffset, t.length)
}
