import { groupedResidualFSQ, groupedResidualLFQ } from '../grouped/grouped-residual.js'
import { latentQuantize } from '../latent/latent.js'
import { randomProjectionQuantizer } from '../random-projection/random-projection.js'
import { residualLFQ } from '../residual/residual-lfq.js'
import { residualSimVQ } from '../simvq/residual-simvq.js'
import { runSimVQCase } from '../simvq/golden.js'
import { runHierarchicalVQCase } from '../hierarchical/golden.js'
import { runFSQCase } from './fsq-case.js'
import { runFSPCase } from '../fsp/golden.js'
import { fsp } from '../fsp/fsp.js'
import { binaryMapper } from '../binary/binary-mapper.js'
import { fsq } from '../fsq/fsq.js'
import { lfq } from '../lfq/lfq.js'
import { simVQ } from '../simvq/simvq.js'
import { vectorQuantize } from '../vq/vector-quantize.js'
import { residualVQ } from '../residual-vq/residual-vq.js'
import { residualFSQ } from '../residual/residual-fsq.js'
import { groupedResidualVQ } from '../residual-vq/grouped-residual-vq.js'
import { sequentialCaseRunner } from '../sequential/golden.js'
import { CONFIG_BUFFERS, quantizerCaseRunner } from './generic-case.js'
import { runLFQCase } from './lfq-case.js'
import { runResidualFSQCase } from './rfsq-case.js'
import type { CaseRunners } from './runner.js'
import { runVectorQuantizeCase } from '../vq/golden.js'
import { runGroupedResidualVQCase, runResidualVQCase } from '../residual-vq/golden.js'

/**
 * Every class the library has, by the reference's class name; a case of a class not here is
 * reported unsupported. Add a class by adding its runner to this map (no registration side
 * effects); `quantizerCaseRunner(build)` covers a quantizer whose outputs use the usual names.
 */
export const caseRunners: CaseRunners = {
  FSQ: runFSQCase,
  LFQ: runLFQCase,
  LatentQuantize: quantizerCaseRunner(latentQuantize, { derived: ['_levels', '_basis', 'implicit_codebook'] }),
  VectorQuantize: runVectorQuantizeCase,
  ResidualVQ: runResidualVQCase,
  GroupedResidualVQ: runGroupedResidualVQCase,
  ResidualFSQ: runResidualFSQCase,
  ResidualLFQ: quantizerCaseRunner(residualLFQ, { derived: CONFIG_BUFFERS }),
  GroupedResidualFSQ: quantizerCaseRunner(groupedResidualFSQ, { derived: CONFIG_BUFFERS }),
  GroupedResidualLFQ: quantizerCaseRunner(groupedResidualLFQ, { derived: CONFIG_BUFFERS }),
  SimVQ: runSimVQCase,
  ResidualSimVQ: quantizerCaseRunner(residualSimVQ),
  RandomProjectionQuantizer: quantizerCaseRunner(randomProjectionQuantizer),
  FSP: runFSPCase,
  BinaryMapper: quantizerCaseRunner(binaryMapper),
  HierarchicalVQ: runHierarchicalVQCase,
  Sequential: sequentialCaseRunner({ FSQ: fsq, LFQ: lfq, FSP: fsp, LatentQuantize: latentQuantize, VectorQuantize: vectorQuantize, ResidualVQ: residualVQ, ResidualFSQ: residualFSQ, ResidualLFQ: residualLFQ, SimVQ: simVQ, ResidualSimVQ: residualSimVQ, RandomProjectionQuantizer: randomProjectionQuantizer, GroupedResidualVQ: groupedResidualVQ, GroupedResidualFSQ: groupedResidualFSQ, GroupedResidualLFQ: groupedResidualLFQ }),
}
