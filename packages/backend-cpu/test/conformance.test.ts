import { describeConformance } from '@tessera/core/testing'
import { cpuBackend } from '../src/index.js'

// Against itself this must pass exactly (referenceCaps are all-zero tolerances); it also keeps
// the suite's own generators honest: every case must be a valid program the reference accepts.
describeConformance('backend-cpu', async () => cpuBackend(), { numRuns: 30 })
