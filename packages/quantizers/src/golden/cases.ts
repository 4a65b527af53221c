import { groupedResidualFSQ, groupedResidualLFQ } from '../grouped/grouped-residual.js'
import { latentQuantize } from '../latent/latent.js'
import { residualLFQ } from '../residual/residual-lfq.js'
import { runFSQCase } from './fsq-case.js'
import { quantizerCaseRunner } from './generic-case.js'
import { runLFQCase } from './lfq-case.js'
import { runResidualFSQCase } from './rfsq-case.js'
import type { CaseRunners } from './runner.js'
import { runVectorQuantizeCase } from '../vq/golden.js'
import { runResidualVQCase } from '../residual-vq/golden.js'

/**
 * Every class the golden runner knows, by the reference's class name. A case whose class is not
 * here fails. Add a class by adding its runner to this map (no registration side effects);
 * `quantizerCaseRunner(build)` covers a quantizer whose outputs use the usual names.
 */
export const caseRunners: CaseRunners = {
  FSQ: runFSQCase,
  VectorQuantize: runVectorQuantizeCase,
  ResidualVQ: runResidualVQCase,
  LFQ: runLFQCase,
  ResidualFSQ: runResidualFSQCase,
  ResidualLFQ: quantizerCaseRunner(residualLFQ),
  GroupedResidualFSQ: quantizerCaseRunner(groupedResidualFSQ),
  GroupedResidualLFQ: quantizerCaseRunner(groupedResidualLFQ),
  LatentQuantize: quantizerCaseRunner(latentQuantize, ['_levels', '_basis', 'implicit_codebook']),
}
