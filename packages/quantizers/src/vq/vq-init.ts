import type { HostTensor } from '@tessera/core'
import { random, tensorOf, zerosHost } from '@tessera/core'
import type { VQConfig } from './config.js'

/**
 * The initial codebook (C, K, cd) as the reference makes it: zeros under `kmeans_init` (the first
 * batch's k-means fills it), else torch's `kaiming_uniform_` on (C, K, d), whose fan_in is K·d and
 * gain sqrt(2), rows l2-normalised for a cosine codebook.
 */
export function initialEmbed(cfg: VQConfig, key: random.Key): HostTensor {
  const { codebook_size: K, codebook_dim: cd, num_codebooks: C } = cfg
  if (cfg.kmeans_init) return zerosHost([C, K, cd], 'float32')
  const bound = Math.sqrt(6 / (K * cd))
  const data = random.uniformHost(key, C * K * cd).map((v) => (2 * v - 1) * bound)
  if (cfg.use_cosine_sim)
    for (let r = 0; r < C * K; r++) {
      let s = 0
      for (let j = 0; j < cd; j++) s += data[r * cd + j]! ** 2
      const nrm = Math.max(Math.sqrt(s), 1e-6)
      for (let j = 0; j < cd; j++) data[r * cd + j] = data[r * cd + j]! / nrm
    }
  return tensorOf(data, [C, K, cd])
}
