import { readFileSync } from 'node:fs'
import os from 'node:os'

/** Whether f32x4.relaxed_madd is a fused multiply-add on this machine (x64 with FMA3, or arm64). */
export function fusedHere(): boolean {
  if (os.arch() === 'arm64') return true
  if (os.arch() !== 'x64') return false
  try {
    return /\bfma\b/.test(readFileSync('/proc/cpuinfo', 'utf8'))
  } catch {
    return false
  }
}
