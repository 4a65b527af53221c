#!/usr/bin/env node
// Runs `vitest run` for every project in vitest.config.ts.
// headless-gl needs an X display: when DISPLAY is unset and xvfb-run exists, vitest runs under `xvfb-run -a`.
// Extra arguments go to vitest (`pnpm test --project core`, `pnpm test -- --reporter=dot`).
// VITEST_JSON=<path> adds the default and json reporters and writes the JSON report to <path>.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const vitestBin = join(root, 'node_modules', 'vitest', 'vitest.mjs')
if (!existsSync(vitestBin)) {
  console.error(`test: ${vitestBin} not found; run pnpm install first`)
  process.exit(1)
}

const args = process.argv.slice(2)
if (args[0] === '--') args.shift()
const json = process.env.VITEST_JSON
if (json) args.push('--reporter=default', '--reporter=json', `--outputFile.json=${json}`)

const vitest = [process.execPath, vitestBin, 'run', ...args]
const hasXvfb = !process.env.DISPLAY && process.platform === 'linux' &&
  spawnSync('sh', ['-c', 'command -v xvfb-run'], { stdio: 'ignore' }).status === 0
const cmd = hasXvfb ? ['xvfb-run', '-a', '-s', '-screen 0 1280x1024x24', ...vitest] : vitest
if (!process.env.DISPLAY && !hasXvfb) console.warn('test: no DISPLAY and no xvfb-run; headless-gl tests will be skipped or fail')

const child = spawn(cmd[0], cmd.slice(1), { cwd: root, stdio: 'inherit' })
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig))
child.on('error', (e) => { console.error(e); process.exit(1) })
child.on('exit', (code, signal) => process.exit(code ?? 128 + (os.constants.signals[signal] ?? 1)))
