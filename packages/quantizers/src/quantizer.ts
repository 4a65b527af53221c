import type { Aval, HostTensor, Named, Tensor } from '@tessera/core'
import type { random } from '@tessera/core'

export type { Named } from '@tessera/core'

/**
 * Parameters and state are flat `Named` records (core's) keyed by the reference's state-dict names
 * (`_codebook.embed`, `project_in.weight`, `layers.0._codebook.cluster_size`, ...), so loading a
 * PyTorch state dict, a golden case or a safetensors file is a lookup, and a combinator nests its
 * children by prefixing their names (`layers.${i}.`).
 * `params` are what gradients flow to (learnable weights); `state` holds buffers that change only
 * through pure state transitions (EMA statistics, `initted` flags, ...).
 */
export interface Init {
  readonly params: Named<HostTensor>
  readonly state: Named<HostTensor>
}

export interface ApplyOptions {
  /** Training mode: losses are computed, EMA/k-means/dead-code transitions run. */
  readonly training: boolean
  /** i32[2] key for anything random in this call (sampling, noise dropout, dead-code rows). */
  readonly key?: Tensor
  /**
   * The ranks this call is traced for (docs/DISTRIBUTED.md): each rank holds an equal shard of the
   * global batch, statistics the reference all-reduces are summed over ranks, and draws over batch
   * rows are made over the global batch. Every rank passes the same key and runs the program with
   * `runCollective`.
   */
  readonly world?: { readonly size: number }
}

export interface QuantizeResult {
  /** Same layout as the input (channel-first stays channel-first). */
  readonly quantized: Tensor
  /** Code indices (int32); layout follows the reference for each quantizer. */
  readonly indices: Tensor
  /** The total auxiliary loss the reference returns (scalar; 0 in eval where the reference gives 0). */
  readonly loss: Tensor
  /** Named scalar loss terms (commitment, codebook, entropy, orthogonal, per-layer ...). */
  readonly losses: Named<Tensor>
  /** The new state (same keys as the input state); equal to the input state in eval. */
  readonly state: Named<Tensor>
  /** Extra outputs a quantizer offers (distances, all codes, per-layer values ...). */
  readonly extra?: Named<Tensor>
}

/**
 * A quantizer is a value built from a decoded config. `apply` is a traceable function of symbolic
 * tensors (it records a program; nothing runs until a backend runs it).
 */
export interface Quantizer<C = unknown> {
  readonly kind: string
  readonly config: C
  /** Avals of the parameters and state, to trace `apply` without data. */
  readonly paramSpecs: Named<Aval>
  readonly stateSpecs: Named<Aval>
  init(key: random.Key): Init
  apply(params: Named<Tensor>, state: Named<Tensor>, x: Tensor, opts: ApplyOptions): QuantizeResult
  /** `state` is needed where a buffer takes part in decoding (FSQ/LFQ `orthogonal_rot`). */
  indicesToCodes(params: Named<Tensor>, indices: Tensor, state?: Named<Tensor>): Tensor
}
