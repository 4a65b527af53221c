// The page as a user meets it: `vite build` of examples/web (into a temp folder), served by a
// static server, opened in Debian's headless Chromium through playwright-core (no browser
// download). It trains a few dozen steps on two backends, checks that the loss fell and the
// canvases are drawn, saves a screenshot, and loads checkpoints back: the page's own download
// and a file in the format `pnpm demo` writes (made here with the demo's encodeCheckpoint).
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import type { Server } from 'node:http'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, extname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { random } from '@tessera/core'
import { encodeCheckpoint } from '../../demo/src/vqvae/checkpoint.js'
import { chooseQuantizer } from '../../demo/src/vqvae/choices.js'
import { makeVqVae } from '../../demo/src/vqvae/model.js'

const here = dirname(fileURLToPath(import.meta.url))
const root = resolve(here, '../../..')
const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium'
// the flags vitest.config.ts gives Chromium (TOOLCHAIN §5); --enable-unsafe-webgpu gives a SwiftShader adapter
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu']
// test runs leave the tree clean (out/ is ignored); the README's copy is refreshed on request:
// TESSERA_WEB_SCREENSHOT=docs/web-screenshot.png pnpm test --project web
const SCREENSHOT = resolve(root, process.env['TESSERA_WEB_SCREENSHOT'] ?? 'out/web/screenshot.png')
// a few dozen steps show the loss falling; the README's screenshot was taken after more of them
// (TESSERA_WEB_STEPS=300), where the reconstructions look like digits
const STEPS = Number(process.env['TESSERA_WEB_STEPS'] ?? 30)
const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm' }

const work = mkdtempSync(join(tmpdir(), 'tessera-web-'))
const dist = join(work, 'dist')
let server: Server
let browser: Browser
let url = ''

beforeAll(async () => {
  // the same build `pnpm web:build` runs, into a temp folder so a test run writes nothing in the tree
  const vite = join(root, 'node_modules', 'vite', 'bin', 'vite.js')
  const env = { ...process.env, NODE_ENV: 'production' }
  const r = spawnSync(process.execPath, [vite, 'build', 'examples/web', '--outDir', dist, '--emptyOutDir', '--logLevel', 'warn'], { cwd: root, env, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`vite build failed:\n${r.stdout}${r.stderr}`)
  server = createServer((req, res) => {
    const file = join(dist, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/\/$/, '/index.html'))
    if (!file.startsWith(dist) || !existsSync(file) || !statSync(file).isFile()) return void res.writeHead(404).end()
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file))
  })
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
  // localhost is a secure context, which WebGPU needs
  url = `http://localhost:${(server.address() as { port: number }).port}/`
  const { chromium } = await import('playwright-core')
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS })
}, 120_000)

afterAll(async () => {
  await browser?.close()
  server?.close()
  rmSync(work, { recursive: true, force: true })
})

async function openPage(): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1040, height: 900 } })
  const errors: string[] = []
  page.on('pageerror', (e) => errors.push(String(e)))
  await page.goto(url)
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30_000 })
  return { page, errors }
}

/** Waits for the page to finish its action; fails with the page's own status line if it reports an error. */
async function settled(page: Page, timeout: number): Promise<Record<string, string>> {
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout })
  const data = await page.evaluate(() => ({ ...document.body.dataset }) as Record<string, string>)
  if (data['state'] !== 'done') throw new Error(`the page reports: ${await page.textContent('#status')}`)
  return data
}

/**
 * Reads the digit grid back from the canvas: the distinct grey levels of the reconstructions and
 * the correlation of their pixels with the originals' (about 0 for a blank or noise picture).
 */
const gridInk = (page: Page) =>
  page.evaluate(() => {
    const c = document.getElementById('grid') as HTMLCanvasElement
    const [cell, perRow, count, scale] = ['cell', 'perRow', 'count', 'scale'].map((k) => Number(c.dataset[k]))
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
    const grey = (x: number, y: number) => d[4 * (y * c.width + x)]!
    const a: number[] = [], b: number[] = []
    for (let i = 0; i < count!; i++) {
      const x0 = (i % perRow!) * cell! + 1, y0 = Math.floor(i / perRow!) * (2 * cell! + 6) + 1
      for (let r = 0; r < 28; r++)
        for (let k = 0; k < 28; k++) {
          a.push(grey(x0 + k * scale!, y0 + r * scale!))
          b.push(grey(x0 + k * scale!, y0 + cell! + r * scale!))
        }
    }
    const mean = (v: number[]) => v.reduce((s, x) => s + x, 0) / v.length
    const ma = mean(a), mb = mean(b)
    let ab = 0, aa = 0, bb = 0
    for (let i = 0; i < a.length; i++) (ab += (a[i]! - ma) * (b[i]! - mb)), (aa += (a[i]! - ma) ** 2), (bb += (b[i]! - mb) ** 2)
    return { count: count!, levels: new Set(b).size, corr: ab / Math.sqrt(aa * bb || 1) }
  })

/** Non-white pixels of a canvas (a plot with a line has many). */
const inked = (page: Page, id: string) =>
  page.evaluate((id) => {
    const c = document.getElementById(id) as HTMLCanvasElement
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data
    let n = 0
    for (let i = 0; i < d.length; i += 4) if (d[i]! < 200 || d[i + 1]! < 200 || d[i + 2]! < 200) n++
    return n
  }, id)

describe('examples/web in headless Chromium', () => {
  let page: Page
  let errors: string[]

  for (const backend of ['cpu', 'gpujs-webgl2'])
    it(`trains ${STEPS} steps on ${backend}: the loss falls and the canvases are drawn`, async () => {
      ;({ page, errors } = await openPage())
      await page.selectOption('#quantizer', 'fsq')
      await page.selectOption('#backend', backend)
      await page.fill('#steps', String(STEPS))
      // 32 test digits: the preview's batch, so gpu.js reuses the preview's kernels for the evaluation
      await page.fill('#test-images', '32')
      await page.click('#train')
      const data = await settled(page, 90_000 + 1000 * STEPS)
      expect(Number(data['steps'])).toBe(STEPS)
      expect(Number(data['lastLoss'])).toBeLessThan(0.8 * Number(data['firstLoss']))
      expect(Number(data['testMse'])).toBeGreaterThan(0)
      // the reconstructions are grey-level pictures that already follow the digits (blurred)
      const ink = await gridInk(page)
      expect(ink.count).toBe(32)
      expect(ink.levels).toBeGreaterThan(20)
      expect(ink.corr).toBeGreaterThan(0.3)
      for (const plot of ['loss', 'usage', 'histogram']) expect(await inked(page, plot)).toBeGreaterThan(500)
      expect(errors).toEqual([])
      if (backend === 'gpujs-webgl2') {
        mkdirSync(dirname(SCREENSHOT), { recursive: true })
        await page.screenshot({ path: SCREENSHOT, fullPage: true })
      }
    }, 120_000 + 1000 * STEPS)

  it('saves a checkpoint and loads it back with the same test error', async () => {
    const before = await page.evaluate(() => document.body.dataset['testMse'])
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#save')])
    const saved = join(work, 'saved.safetensors')
    await download.saveAs(saved)
    await page.setInputFiles('#load', saved)
    await page.waitForSelector('#status:has-text("checkpoint saved.safetensors")', { timeout: 60_000 })
    const data = await settled(page, 60_000)
    expect(data['testMse']).toBe(before)
    expect(errors).toEqual([])
  }, 120_000)

  it('loads a checkpoint in the format pnpm demo writes and rebuilds its model', async () => {
    const choice = chooseQuantizer('vq')
    if (choice._tag === 'Left') throw new Error(String(choice.left))
    const model = makeVqVae(choice.right, { tokens: choice.right.tokens, hidden: 32, output: 'linear' })
    const init = model.init(random.keyFromSeed(7))
    const file = join(work, 'model.safetensors')
    writeFileSync(file, encodeCheckpoint(init.params, init.state, { quantizer: 'vq', tokens: model.shape.tokens, hidden: 32 }))
    await page.selectOption('#backend', 'cpu')
    await page.setInputFiles('#load', file)
    await page.waitForSelector('#status:has-text("checkpoint model.safetensors")', { timeout: 60_000 })
    await settled(page, 60_000)
    expect(await page.inputValue('#quantizer')).toBe('vq')
    expect(await page.inputValue('#hidden')).toBe('32')
    expect(await page.textContent('#summary')).toContain('VectorQuantize')
    expect(errors).toEqual([])
    await page.close()
  }, 120_000)
})
