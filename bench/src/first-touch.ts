/**
 * What writing into fresh memory costs on this machine: a process's first write to each page of
 * a new typed array (the kernel's page faults, and on a virtual machine its host's), against
 * writing the same array again. Every first call writes its outputs into fresh arrays, so this
 * is a floor under issue 16's first-call target that no implementation's code can lower.
 *
 * `pnpm bench:first-touch [--json]` runs it alone; `pnpm bench` runs it in a fresh child process at
 * the start of a run and writes it into the results.
 */

export interface FirstTouch {
  /** ms per MiB (2^20 bytes) of the first fill of a new array: the median of the arrays measured. */
  readonly freshMsPerMiB: number
  /** ms per MiB of filling the same arrays again. */
  readonly residentMsPerMiB: number
}

/** Arrays of `mib` MiB each, all kept alive, so that none reuses pages another freed. */
export function measureFirstTouch(arrays = 5, mib = 8): FirstTouch {
  const kept: Float32Array[] = []
  const fresh: number[] = []
  const resident: number[] = []
  for (let i = 0; i < arrays; i++) {
    const a = new Float32Array((mib << 20) / 4)
    let t = performance.now()
    a.fill(i + 1)
    fresh.push((performance.now() - t) / mib)
    t = performance.now()
    a.fill(i + 2)
    resident.push((performance.now() - t) / mib)
    kept.push(a)
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[xs.length >> 1]!
  // read one value of each so that no fill is dead code
  if (kept.reduce((s, a) => s + a[0]!, 0) < 0) throw new Error('unreachable')
  return { freshMsPerMiB: median(fresh), residentMsPerMiB: median(resident) }
}

const isMain = process.argv[1] && import.meta.url.endsWith(process.argv[1].replace(/.*\//, ''))
if (isMain) {
  const r = measureFirstTouch()
  if (process.argv.includes('--json')) process.stdout.write(JSON.stringify(r) + '\n')
  else console.log(`first write to fresh memory ${r.freshMsPerMiB.toFixed(2)} ms/MiB, writing it again ${r.residentMsPerMiB.toFixed(3)} ms/MiB`)
}
