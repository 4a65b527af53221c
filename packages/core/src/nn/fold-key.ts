import type { Tensor } from '../builder.js'
import { TesseraError } from '../error.js'

/**
 * Multipliers that spread a small tag over the key's first word. Callers that fold tags from
 * separate numberings use separate multipliers, so that tag 1 of one never gives the key of tag 1
 * of the other: residual layers fold their layer number with LAYER_STREAM, a quantizer's random
 * uses (sampling, k-means, dead codes) their tags with the default.
 */
export const TAG_STREAM = 0x2545f491
export const LAYER_STREAM = 0x3c6ef372

/**
 * A key derived from a traced i32[2] `key` and an integer tag: key + [tag * multiplier, tag] with
 * int32 wrap-around. A draw's element i depends only on (key, i), so two uses of one key would be
 * correlated: every use folds in its own tag.
 */
export function foldKey(key: Tensor, tag: number, multiplier = TAG_STREAM): Tensor {
  if (key.dtype !== 'int32' || key.rank !== 1 || key.shape[0] !== 2)
    throw new TesseraError('input', 'key', `a random key must be i32[2], got ${key.dtype}[${key.shape.join(',')}]`)
  return key.add(key.builder.constant([Math.imul(tag, multiplier) | 0, tag | 0], [2], 'int32'))
}
