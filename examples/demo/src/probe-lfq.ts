// Probe an LFQ or ResidualLFQ recipe without editing choices.ts (SEED=n picks the seed):
//   npx tsx --conditions=@tessera/source examples/demo/src/probe-lfq.ts '<LFQ options JSON>' [steps] [tokens] [lr] [testImages]
// Prints the reconstruction error along the way and the test metrics at the end (one JSON line).
import * as E from 'fp-ts/lib/Either.js'
import { fastBackend } from '@tessera/backend-fast'
import type { TesseraError } from '@tessera/core'
import type { Quantizer } from '@tessera/quantizers'
import { lfq, residualLFQ } from '@tessera/quantizers'
import type { QuantizerChoice } from './vqvae/choices.js'
import { loadMnist } from './vqvae/mnist.js'
import { evaluate, trainVqVae } from './vqvae/train.js'

const [json = '{}', steps = '200', tokens = '64', lr = '3e-3', testImages = '200'] = process.argv.slice(2)
const options = JSON.parse(json) as Record<string, unknown>
// options with num_quantizers make a ResidualLFQ (one index per layer), others an LFQ
const residual = options['num_quantizers'] !== undefined
const q: E.Either<TesseraError, Quantizer<unknown>> = residual ? residualLFQ(options) : lfq(options)
if (E.isLeft(q)) throw q.left
const codebookSize = Number(options['codebook_size'])
const codebooks = residual ? Number(options['num_quantizers']) : Number(options['num_codebooks'] ?? 1)
const choice: QuantizerChoice = {
  name: 'lfq-probe', describe: json, tokenDim: Number(options['dim']), codebookSize, codebooks,
  tokens: Number(tokens), options, quantizer: q.right,
}
const t0 = performance.now(), c0 = process.cpuUsage()
const r = await trainVqVae(
  { quantizer: 'lfq', choice, backend: fastBackend(), steps: Number(steps), batch: 64, lr: Number(lr), seed: Number(process.env['SEED'] ?? 1), hidden: 128, testImages: Number(testImages) },
  loadMnist(),
  (s) => { if (s.step % 50 === 0) console.log(`step ${s.step}: loss ${s.loss.toFixed(4)} recon ${s.mse.toFixed(4)} usage ${(100 * s.usage).toFixed(1)}%`) },
)
const m = r.metrics
// per-bit balance over the test images: a bit stuck at one value for every image carries nothing
const ev = await evaluate(r.model, r.params, r.state, loadMnist(), fastBackend(), Number(testImages))
const d = Math.log2(codebookSize), perTok = choice.tokens * codebooks
const ones = new Float64Array(perTok * d)
let rows = 0
for (const t of ev.indices) for (let i = 0; i < t.data.length; i++) { rows += i % perTok === 0 ? 1 : 0; for (let j = 0; j < d; j++) ones[(i % perTok) * d + j]! += (t.data[i]! >> j) & 1 }
const frac = Array.from(ones, (v) => v / rows)
const stuck = frac.filter((f) => f < 0.02 || f > 0.98).length
const balanced = frac.filter((f) => f > 0.2 && f < 0.8).length
console.log(JSON.stringify({
  options, seed: Number(process.env['SEED'] ?? 1), steps: Number(steps), tokens: Number(tokens), lr: Number(lr), testImages: m.testImages, testMse: +m.testMse.toFixed(5),
  ratio: +m.baselineRatio.toFixed(2), usage: +m.codebookUsage.toFixed(3), perplexity: +m.perplexity.toFixed(1),
  stuckBits: stuck, balancedBits: balanced, bits: frac.length,
  wall: +((performance.now() - t0) / 1000).toFixed(1), cpu: +(process.cpuUsage(c0).user / 1e6).toFixed(1),
}))
