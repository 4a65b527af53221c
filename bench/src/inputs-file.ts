import { closeSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs'
import type { Input } from './workloads.js'

/**
 * A workload's inputs are generated once by the parent process and written to a file; each
 * measured process reads them straight into their final Float32Arrays. Generating them in the
 * measured process cost ~5 MB of RSS beyond the arrays themselves (the optimizing compiler's
 * memory for the generator loop, kept by the allocator), which is the harness's, not the
 * implementation's. Layout: `<file>.json` holds [{ shape, offset }], `<file>` the float32 data.
 */
export function writeInputs(file: string, ins: readonly Input[]): void {
  const index: { shape: number[]; offset: number }[] = []
  const fd = openSync(file, 'w')
  try {
    let offset = 0
    for (const t of ins) {
      index.push({ shape: t.shape, offset })
      const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength)
      for (let done = 0; done < bytes.byteLength; ) done += writeSync(fd, bytes, done)
      offset += t.data.byteLength
    }
  } finally {
    closeSync(fd)
  }
  writeFileSync(`${file}.json`, JSON.stringify(index))
}

export function readInputs(file: string): Input[] {
  const index = JSON.parse(readFileSync(`${file}.json`, 'utf8')) as { shape: number[]; offset: number }[]
  const fd = openSync(file, 'r')
  try {
    return index.map(({ shape, offset }) => {
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
      const bytes = new Uint8Array(data.buffer)
      for (let done = 0; done < bytes.byteLength; ) {
        const n = readSync(fd, bytes, done, bytes.byteLength - done, offset + done)
        if (n === 0) throw new Error(`inputs file ${file} ends before input at offset ${offset} does`)
        done += n
      }
      return { shape, data }
    })
  } finally {
    closeSync(fd)
  }
}
