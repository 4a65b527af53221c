/**
 * The MNIST digit sets as the demo uses them, with no Node built-ins, so the browser page
 * (examples/web) shares them: the split, batching and the mean-image baseline. Reading the
 * `mnist` package's files is Node-only and lives in mnist.ts.
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

/**
 * Splits the images of each digit (`perDigit[d]`: that digit's images, n x 784, row-major)
 * into a training and a test set: the last `testPerDigit` images of every digit are the test
 * set, the rest the training set, both ordered by digit.
 */
export function splitDigits(perDigit: readonly ArrayLike<number>[], testPerDigit = 100): MnistSplit {
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
        const src = perDigit[d]!
        for (let j = 0; j < IMAGE_SIZE; j++) images[row * IMAGE_SIZE + j] = src[i * IMAGE_SIZE + j]!
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
