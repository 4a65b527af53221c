// A first look at Tessera: trace a nearest-code search into a program, print it, and run it on
// the CPU reference backend. (The training demo will replace this file.)
import type { Tensor } from '@tessera/core'
import { printProgram, random, run, tensorOf, trace } from '@tessera/core'
import { cpuBackend } from '@tessera/backend-cpu'

const [n, k, d] = [6, 8, 4]

// ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2, minimised over the codebook rows
function nearestCode(x: Tensor, codebook: Tensor) {
  const dist = x.square().sum(1, true).sub(x.matmul(codebook.mT).mul(2)).add(codebook.square().sum(1))
  const indices = dist.argmin(1)
  return { indices, quantized: codebook.gather(indices, 0) }
}

async function main(): Promise<number> {
  const [kx, kc] = random.splitKey(random.keyFromSeed(0))
  const x = tensorOf(random.normalHost(kx!, n * d), [n, d])
  const codebook = tensorOf(random.normalHost(kc!, k * d), [k, d])

  const traced = trace([x, codebook], nearestCode)
  if (traced._tag === 'Left') {
    console.error(traced.left.message)
    return 1
  }
  console.log(printProgram(traced.right.program))

  const out = await run(traced.right.program, [x, codebook], cpuBackend())
  if (out._tag === 'Left') {
    console.error(out.left.message)
    return 1
  }
  const { indices, quantized } = traced.right.unflattenOutputs(out.right)
  console.log(`\nnearest code of each of ${n} vectors among ${k}:`, Array.from(indices.data))
  console.log('first quantized row:', Array.from(quantized.data.slice(0, d), (v) => v.toFixed(4)).join(' '))
  return 0
}

main().then((code) => process.exit(code))
