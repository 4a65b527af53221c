import type { Backend, HostTensor } from '@tessera/core'
import { tensorOf } from '@tessera/core'
import { cpuBackend, fusedCpuBackend } from '@tessera/backend-cpu'
import { fastBackend } from '@tessera/backend-fast'
import { fsq } from '../src/fsq/fsq.js'
import { lfq } from '../src/lfq/lfq.js'
import { latentQuantize } from '../src/latent/latent.js'
import { vectorQuantize } from '../src/vq/vector-quantize.js'
import { residualVQ } from '../src/residual-vq/residual-vq.js'
import { groupedResidualVQ } from '../src/residual-vq/grouped-residual-vq.js'
import { residualFSQ } from '../src/residual/residual-fsq.js'
import { residualLFQ } from '../src/residual/residual-lfq.js'
import { groupedResidualFSQ, groupedResidualLFQ } from '../src/grouped/grouped-residual.js'
import { simVQ } from '../src/simvq/simvq.js'
import { residualSimVQ } from '../src/simvq/residual-simvq.js'
import { randomProjectionQuantizer } from '../src/random-projection/random-projection.js'
import { fsp } from '../src/fsp/fsp.js'
import { binaryMapper } from '../src/binary/binary-mapper.js'
import { hierarchicalVQ } from '../src/hierarchical/hierarchical-vq.js'
import { linearStage, sequential } from '../src/sequential/sequential.js'
import type { Quantizer } from '../src/quantizer.js'
import type { Lane } from './lanes.js'
import { gpuJsLane } from './lanes.js'
import { orThrow, randn } from './helpers.js'

/**
 * One small configuration of every quantizer class, with an input shape it accepts (dim 4 or 6,
 * `(b, n, d)` or channel-first where the class requires it). Used by the aliasing, finite-input and
 * hostile-input suites (issue 15), which must cover every quantizer.
 */
export interface ZooEntry {
  readonly name: string
  readonly q: Quantizer
  readonly xShape: readonly number[]
}

const entry = (name: string, q: Quantizer, xShape: readonly number[]): ZooEntry => ({ name, q, xShape })

export const zoo: readonly ZooEntry[] = [
  entry('FSQ', orThrow(fsq({ levels: [5, 4, 3], dim: 4 })), [2, 3, 4]),
  entry('LFQ', orThrow(lfq({ dim: 4, codebook_size: 16 })), [2, 3, 4]),
  entry('LatentQuantize', orThrow(latentQuantize({ levels: [3, 3], dim: 4 })), [2, 4, 3]),
  entry('VectorQuantize', orThrow(vectorQuantize({ dim: 4, codebook_size: 8 })), [2, 3, 4]),
  entry('SimVQ', orThrow(simVQ({ dim: 4, codebook_size: 8 })), [2, 3, 4]),
  entry('RandomProjectionQuantizer', orThrow(randomProjectionQuantizer({ dim: 4, codebook_size: 8, codebook_dim: 3 })), [2, 3, 4]),
  entry('ResidualVQ', orThrow(residualVQ({ dim: 4, num_quantizers: 2, codebook_size: 8 })), [2, 3, 4]),
  entry('ResidualFSQ', orThrow(residualFSQ({ levels: [5, 5], dim: 4, num_quantizers: 2 })), [2, 3, 4]),
  entry('ResidualLFQ', orThrow(residualLFQ({ dim: 4, codebook_size: 16, num_quantizers: 2 })), [2, 3, 4]),
  entry('ResidualSimVQ', orThrow(residualSimVQ({ dim: 4, codebook_size: 8, num_quantizers: 2 })), [2, 3, 4]),
  entry('GroupedResidualVQ', orThrow(groupedResidualVQ({ dim: 4, groups: 2, num_quantizers: 2, codebook_size: 8 })), [2, 3, 4]),
  entry('GroupedResidualFSQ', orThrow(groupedResidualFSQ({ dim: 6, groups: 2, levels: [5, 5], num_quantizers: 2 })), [2, 3, 6]),
  entry('GroupedResidualLFQ', orThrow(groupedResidualLFQ({ dim: 4, groups: 2, codebook_size: 4, num_quantizers: 2 })), [2, 3, 4]),
  entry('FSP', orThrow(fsp({ levels: [5, 4, 3], dim: 4 })), [2, 3, 4]),
  entry('BinaryMapper', orThrow(binaryMapper({ bits: 3, deterministic_on_eval: true })), [2, 3, 3]),
  // channel-first images: pools 3x3 to 2x2 over overlapping windows and resizes 2 -> 3 and 1 -> 3
  entry('HierarchicalVQ', orThrow(hierarchicalVQ({ dim: 4, codebook_size: 8, scales: [1, 2, 3], accept_image_fmap: true, kmeans_init: false })), [2, 4, 3, 3]),
  entry('Sequential', orThrow(sequential([linearStage(6, 4), orThrow(vectorQuantize({ dim: 4, codebook_size: 8 })), linearStage(4, 6)])), [2, 3, 6]),
]

export const xFor = (e: ZooEntry, seed = 1): HostTensor => randn(e.xShape, seed)
export const keyFor = (seed: number) => tensorOf([seed, 7], [2], 'int32')

/** Every backend available in Node, as lanes (gpu.js modes skip, visibly, where they cannot run). */
export const nodeLanes: readonly Lane[] = [
  { name: 'cpu', make: async () => cpuBackend() as Backend },
  { name: 'cpu-fused', make: async () => fusedCpuBackend() as Backend },
  { name: 'fast', make: async () => fastBackend() as Backend },
  gpuJsLane('cpu'),
  gpuJsLane('webasm'),
]

/**
 * Every backend but the reference, each in the setting a user would pick (fast with 2 threads and
 * without WebAssembly too, gpu.js in every mode), for suites that compare each one against cpu.
 */
export const comparedLanes: readonly Lane[] = [
  { name: 'cpu-fused', make: async () => fusedCpuBackend() as Backend },
  { name: 'fast (WebAssembly, 2 threads)', make: async () => fastBackend({ threads: 2 }) as Backend },
  { name: 'fast-js', make: async () => fastBackend({ wasm: false }) as Backend },
  gpuJsLane('cpu'),
  gpuJsLane('webasm'),
  gpuJsLane('headlessgl'),
]

/** A deep copy of a record of host tensors, to compare inputs before and after a call. */
export const snapshot = (rec: Readonly<Record<string, HostTensor>>): Record<string, number[]> =>
  Object.fromEntries(Object.entries(rec).map(([k, t]) => [k, Array.from(t.data)]))

