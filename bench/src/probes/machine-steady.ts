/**
 * How steady this machine is: a fixed scalar JS loop (no allocation, no threads, no WebAssembly)
 * timed 300 times after warm-up; prints min, quartiles and p95 in ms. A spread here is the
 * machine's (other tenants, frequency), and every workload's timings carry it too.
 */
const a = new Float64Array(1 << 16).fill(1.0001)
function work(): number {
  let s = 0
  for (let r = 0; r < 40; r++) for (let i = 0; i < a.length; i++) s += a[i]! * a[(i * 7) & 65535]!
  return s
}
let sink = 0
for (let i = 0; i < 20; i++) sink += work()
const times: number[] = []
for (let i = 0; i < 300; i++) {
  const t = performance.now()
  sink += work()
  times.push(performance.now() - t)
}
times.sort((x, y) => x - y)
const q = (p: number) => times[Math.floor(p * (times.length - 1))]!.toFixed(2)
console.log('min', q(0), 'p25', q(0.25), 'median', q(0.5), 'p75', q(0.75), 'p95', q(0.95), sink > 0 ? '' : '?')
