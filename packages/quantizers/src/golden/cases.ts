import type { CaseRunners } from './runner.js'
import { runFSQCase } from './fsq-case.js'
import { runLFQCase } from './lfq-case.js'
import { runResidualFSQCase } from './rfsq-case.js'
import { runVectorQuantizeCase } from '../vq/golden.js'

/**
 * Every class the golden runner knows, by the reference's class name. A case whose class is not
 * here fails. Add a class by adding its runner to this map (no registration side effects).
 */
export const caseRunners: CaseRunners = {
  FSQ: runFSQCase,
  LFQ: runLFQCase,
  ResidualFSQ: runResidualFSQCase,
  VectorQuantize: runVectorQuantizeCase,
}
