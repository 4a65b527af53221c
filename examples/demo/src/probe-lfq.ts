// Probe an LFQ recipe without editing choices.ts:
//   npx tsx --conditions=@tessera/source examples/demo/src/probe-lfq.ts '<LFQ options JSON>' [steps] [tokens] [lr] [testImages]
// Prints the reconstruction error along the way and the test metrics at the end (one JSON line).
import * as E from 'fp-ts/lib/Either.js'
import { fastBackend } from '@tessera/backend-fast'
import { lfq } from '@tessera/quantizers'
import type { Tensor } from '@tessera/core'
import type { QuantizerChoice } from './vqvae/choices.js'
import { loadMnist } from './vqvae/mnist.js'
import { evaluate, trainVqVae } from './vqvae/train.js'

const [json = '{}', steps = '200', tokens = '64', lr = '3e-3', testImages = '200'] = process.argv.slice(2)
const options = JSON.parse(json) as Record<string, unknown>
const q = lfq(options)
if (E.isLeft(q)) throw q.left
const cfg = q.right.config
// CENTER=batch: subtract the batch mean of every (token, dim) before quantizing (hypothesis test only)
const center = process.env['CENTER'] ?? ''
const inner = q.right
const quantizer = center === 'batch'
  ? { ...inner, apply: (p: Parameters<typeof inner.apply>[0], st: Parameters<typeof inner.apply>[1], x: Tensor, o: Parameters<typeof inner.apply>[3]) => inner.apply(p, st, x.sub(x.mean(0, true)), o) }
  : inner
const choice: QuantizerChoice = {
  name: 'lfq-probe', describe: json, tokenDim: cfg.dim, codebookSize: cfg.codebook_size, codebooks: cfg.num_codebooks,
  tokens: Number(tokens), options, quantizer: quantizer as QuantizerChoice['quantizer'],
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
const d = Math.log2(cfg.codebook_size), perTok = choice.tokens * cfg.num_codebooks
const ones = new Float64Array(perTok * d)
let rows = 0
for (const t of ev.indices) for (let i = 0; i < t.data.length; i++) { rows += i % perTok === 0 ? 1 : 0; for (let j = 0; j < d; j++) ones[(i % perTok) * d + j]! += (t.data[i]! >> j) & 1 }
const frac = Array.from(ones, (v) => v / rows)
const stuck = frac.filter((f) => f < 0.02 || f > 0.98).length
const balanced = frac.filter((f) => f > 0.2 && f < 0.8).length
console.log(JSON.stringify({
  options, center, seed: Number(process.env['SEED'] ?? 1), steps: Number(steps), tokens: Number(tokens), lr: Number(lr), testImages: m.testImages, testMse: +m.testMse.toFixed(5),
  ratio: +m.baselineRatio.toFixed(2), usage: +m.codebookUsage.toFixed(3), perplexity: +m.perplexity.toFixed(1),
  stuckBits: stuck, balancedBits: balanced, bits: frac.length,
  wall: +((performance.now() - t0) / 1000).toFixed(1), cpu: +(process.cpuUsage(c0).user / 1e6).toFixed(1),
}))
