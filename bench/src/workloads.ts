import type { Workload } from './workload-kit.js'
import { nearestWorkload, residualWorkload } from './workloads-nearest.js'
import { fsqWorkload, lfqEntropyWorkload, lfqWorkload } from './workloads-scalar.js'

export type { Arr, CheckResult, Input, TF, TfjsPlan, Workload } from './workload-kit.js'

export const workloads: readonly Workload[] = [
  nearestWorkload('W1', [16384, 64, 1024], [1024, 64, 256]),
  nearestWorkload('W1b', [16384, 256, 4096], [512, 256, 512]),
  fsqWorkload,
  lfqWorkload,
  lfqEntropyWorkload,
  residualWorkload(),
]
