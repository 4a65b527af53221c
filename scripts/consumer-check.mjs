#!/usr/bin/env node
// Consumer check (issue 13): Tessera as a user gets it from npm. Builds, packs every package with
// `pnpm pack`, installs the tarballs with npm into a project in the OS temp folder (outside the
// workspace, so nothing resolves through pnpm's links), then runs a Node ESM script, a CommonJS
// require, the `tessera` bin, a strict type-check (NodeNext and bundler), and esbuild browser bundles
// in headless Chromium. The quantizers install must bring no gpu.js and run no install script.
// Prints one line per step and ends with `consumer check: PASSED` or `consumer check: FAILED ...`
// (exit code 1). `--keep` leaves the temp project for inspection.
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { dirname, extname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const fixtures = join(root, 'scripts', 'consumer')
const PACKAGES = ['core', 'backend-cpu', 'backend-fast', 'backend-gpujs', 'nn', 'quantizers', 'cli']
// what a quantizers user installs must not contain these (gpu.js and its native/binary dependencies)
const GPU_PACKAGES = ['gpu.js', 'gl', 'webgpu']
// the flags vitest.config.ts gives Chromium (TOOLCHAIN §5); --enable-unsafe-webgpu gives a SwiftShader adapter
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--enable-unsafe-webgpu']
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

const keep = process.argv.includes('--keep')
const work = mkdtempSync(join(tmpdir(), 'tessera-consumer-'))
const tarballs = join(work, 'tarballs')
const app = join(work, 'app')

class StepFailure extends Error {}
const fail = (msg) => {
  throw new StepFailure(msg)
}

/** Runs a command; throws with the tail of its output when it exits non-zero. */
function sh(cmd, args, { cwd = root, env = process.env, input } = {}) {
  const r = spawnSync(cmd, args, { cwd, env, input, encoding: 'utf8', maxBuffer: 64 << 20 })
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
  if (r.error) fail(`${cmd} ${args.join(' ')}: ${r.error.message}`)
  if (r.status !== 0) fail(`${cmd} ${args.join(' ')} exited ${r.status}:\n${out.trim().split('\n').slice(-30).join('\n')}`)
  return out
}

/**
 * npm with the environment a user has: pnpm's npm_config_* settings (set when this runs under
 * `pnpm run`) are dropped, except the ones that say how to reach the registry.
 */
const npmEnv = Object.fromEntries(
  Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k) || /^npm_config_(registry|https?_proxy|proxy|noproxy|cafile|strict_ssl|cache)$/i.test(k)),
)
const npm = (args) => sh('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, env: npmEnv })

const walk = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? walk(join(dir, d.name)) : [join(dir, d.name)]))

async function step(name, fn) {
  const t = Date.now()
  try {
    const note = await fn()
    console.log(`consumer check: ${name}: ok (${((Date.now() - t) / 1000).toFixed(1)} s)${note ? ` ${note}` : ''}`)
  } catch (e) {
    e.step = name
    throw e
  }
}

// ---- build and pack -------------------------------------------------------------------------

const tarballOf = {}
function packAll() {
  sh('pnpm', ['run', 'build'])
  mkdirSync(tarballs)
  for (const p of PACKAGES) {
    const before = new Set(readdirSync(tarballs))
    sh('pnpm', ['pack', '--pack-destination', tarballs], { cwd: join(root, 'packages', p) })
    const made = readdirSync(tarballs).filter((f) => !before.has(f) && f.endsWith('.tgz'))
    if (made.length !== 1) fail(`pnpm pack in packages/${p} made ${made.length} tarballs`)
    tarballOf[p] = join(tarballs, made[0])
  }
  checkDependencyGraph()
  return `${PACKAGES.length} tarballs`
}

/**
 * Read from the packed manifests, before npm sees them: the quantizers reach no backend, and only
 * backend-gpujs and cli reach gpu.js (npm would otherwise fetch a missing @tessera tarball from the registry).
 */
function checkDependencyGraph() {
  const deps = {}
  for (const p of PACKAGES) {
    const pkg = JSON.parse(sh('tar', ['xzf', tarballOf[p], '-O', 'package/package.json']))
    deps[`@tessera/${p}`] = Object.keys({ ...pkg.dependencies, ...pkg.peerDependencies })
  }
  const reach = (name, seen = new Set()) => {
    for (const d of deps[name] ?? []) if (!seen.has(d)) seen.add(d), reach(d, seen)
    return seen
  }
  const backends = PACKAGES.filter((p) => p.startsWith('backend-')).map((p) => `@tessera/${p}`)
  const q = [...reach('@tessera/quantizers')].filter((d) => backends.includes(d) || GPU_PACKAGES.includes(d))
  if (q.length) fail(`@tessera/quantizers depends on ${q.join(', ')}: the quantizers must pull in no backend`)
  for (const p of PACKAGES.filter((p) => p !== 'backend-gpujs' && p !== 'cli')) {
    const g = [...reach(`@tessera/${p}`)].filter((d) => d === '@tessera/backend-gpujs' || GPU_PACKAGES.includes(d))
    if (g.length) fail(`@tessera/${p} depends on ${g.join(', ')}: only backend-gpujs (and cli) may bring gpu.js`)
  }
}

/** What a published package must and must not hold, read from its installed copy. */
function checkInstalledPackage(p) {
  const dir = join(app, 'node_modules', '@tessera', p)
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'))
  const where = `@tessera/${p}`
  if (pkg.private) fail(`${where}: package.json is private`)
  if (pkg.license !== 'MIT') fail(`${where}: license is ${pkg.license}`)
  for (const f of ['description', 'repository', 'keywords', 'engines']) if (!pkg[f]) fail(`${where}: no ${f} field`)
  const deps = { ...pkg.dependencies, ...pkg.peerDependencies, ...pkg.optionalDependencies }
  for (const [d, range] of Object.entries(deps)) if (String(range).startsWith('workspace:')) fail(`${where}: dependency ${d} is ${range}`)
  for (const f of ['README.md', 'LICENSE']) if (!existsSync(join(dir, f))) fail(`${where}: ${f} not shipped`)
  const files = walk(dir).map((f) => relative(dir, f))
  const junk = files.filter((f) => /(^|\/)(test|src)\/|\.tsbuildinfo$|\.map$/.test(f))
  if (junk.length) fail(`${where}: ships files a user does not need: ${junk.slice(0, 5).join(', ')}`)
  // a dist file with no source is left over from an older build (tsc -b never deletes outputs)
  const stale = files.filter((f) => /^dist\/.*\.js$/.test(f) && !existsSync(join(root, 'packages', p, 'src', f.slice(5).replace(/\.js$/, '.ts'))))
  if (stale.length) fail(`${where}: stale build outputs (remove packages/${p}/dist and rebuild): ${stale.join(', ')}`)
  const leaves = (v) => (typeof v === 'string' ? [v] : Object.values(v ?? {}).flatMap(leaves))
  if (JSON.stringify(pkg.exports).includes('@tessera/source')) fail(`${where}: packed exports keep the workspace-only @tessera/source condition`)
  for (const t of leaves(pkg.exports)) if (!existsSync(join(dir, t))) fail(`${where}: exports target ${t} is not in the package`)
  if (!JSON.stringify(pkg.exports).includes('"types"')) fail(`${where}: exports carry no types`)
  for (const bin of Object.values(pkg.bin ?? {})) {
    const text = readFileSync(join(dir, bin), 'utf8')
    if (!bin.endsWith('.js') || !text.startsWith('#!/usr/bin/env node')) fail(`${where}: bin ${bin} is not a built JS file with a node shebang`)
  }
}

// ---- install --------------------------------------------------------------------------------

const lockPackages = () => JSON.parse(readFileSync(join(app, 'package-lock.json'), 'utf8')).packages ?? {}

/** The install so far brings no gpu.js, runs no install script, and takes @tessera/* from the tarballs. */
function checkLeanInstall(what) {
  const lock = lockPackages()
  const gpu = Object.keys(lock).filter((k) => GPU_PACKAGES.some((g) => k === `node_modules/${g}` || k.endsWith(`/node_modules/${g}`)))
  if (gpu.length) fail(`${what} pulls in ${gpu.join(', ')}`)
  const scripts = Object.entries(lock).filter(([, v]) => v.hasInstallScript).map(([k]) => k)
  if (scripts.length) fail(`${what} runs install scripts (a native build) in ${scripts.join(', ')}`)
  checkTesseraFromTarballs()
  return `${Object.keys(lock).length - 1} packages, no gpu.js, no install scripts`
}

function checkTesseraFromTarballs() {
  for (const [k, v] of Object.entries(lockPackages())) {
    if (!/(^|\/)node_modules\/@tessera\//.test(k)) continue
    if (k.split('node_modules/').length > 2) fail(`npm nested a second copy: ${k}`)
    if (!String(v.resolved ?? '').startsWith('file:')) fail(`npm took ${k} from ${v.resolved}, not from the packed tarball`)
  }
}

function install() {
  mkdirSync(app)
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'tessera-consumer', private: true, type: 'module' }, null, 2))
  const tgz = (...ps) => ps.map((p) => relative(app, tarballOf[p]))
  const notes = []
  let t = Date.now()
  npm(['install', ...tgz('core', 'quantizers', 'backend-cpu')])
  notes.push(`quantizers + backend-cpu: ${checkLeanInstall('installing @tessera/quantizers with @tessera/backend-cpu')}, ${((Date.now() - t) / 1000).toFixed(1)} s`)
  t = Date.now()
  npm(['install', ...tgz('backend-fast', 'nn')])
  notes.push(`+ backend-fast, nn: ${checkLeanInstall('installing @tessera/backend-fast and @tessera/nn')}, ${((Date.now() - t) / 1000).toFixed(1)} s`)
  // gpu.js's optional `gl` compiles a native module that only headless GL needs: a user can skip it the same way
  t = Date.now()
  npm(['install', '--omit=optional', ...tgz('backend-gpujs', 'cli')])
  if (!existsSync(join(app, 'node_modules', 'gpu.js'))) fail('installing @tessera/backend-gpujs did not install gpu.js')
  checkTesseraFromTarballs()
  notes.push(`+ backend-gpujs, cli (--omit=optional): ${Object.keys(lockPackages()).length - 1} packages, ${((Date.now() - t) / 1000).toFixed(1)} s`)
  for (const p of PACKAGES) checkInstalledPackage(p)
  cpSync(fixtures, app, { recursive: true })
  return `\n  ${notes.join('\n  ')}`
}

// ---- Node ---------------------------------------------------------------------------------

const nodeRun = (file) => sh(process.execPath, [file], { cwd: app, env: npmEnv }).trim()

function runBin() {
  const cases = join(work, 'golden')
  mkdirSync(cases)
  cpSync(join(root, 'packages', 'quantizers', 'test', 'golden', 'fsq_2222_symmetric.json'), join(cases, 'fsq_2222_symmetric.json'))
  const out = sh(join(app, 'node_modules', '.bin', 'tessera'), ['golden', cases, '--backend', 'fast'], { cwd: app, env: npmEnv })
  const last = out.trim().split('\n').at(-1)
  if (!/^1 passed, 0 failed/.test(last)) fail(`tessera golden printed ${JSON.stringify(last)}`)
  return `tessera golden: ${last}`
}

// ---- TypeScript -----------------------------------------------------------------------------

/** The ```ts blocks of every installed package README, as files the type-check includes. */
function readmeSnippets() {
  let n = 0
  for (const p of PACKAGES) {
    const md = readFileSync(join(app, 'node_modules', '@tessera', p, 'README.md'), 'utf8')
    const blocks = [...md.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1])
    blocks.forEach((code, i) => writeFileSync(join(app, `readme-${p}-${i}.ts`), `${code}export {}\n`))
    n += blocks.length
  }
  return n
}

function typecheck() {
  const n = readmeSnippets()
  const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc')
  for (const cfg of ['tsconfig.nodenext.json', 'tsconfig.bundler.json']) sh(process.execPath, [tsc, '-p', cfg], { cwd: app })
  return `check.ts, check.cts and ${n} README examples, strict, under NodeNext and bundler resolution`
}

/** The README examples of the packages that run in Node, compiled by esbuild (types stripped) and run. */
async function runReadmes() {
  const esbuild = await import('esbuild')
  // backend-gpujs's example picks webgl2, a browser mode; the bundles below run that backend in Chromium
  const files = readdirSync(app).filter((f) => /^readme-.*\.ts$/.test(f) && !f.startsWith('readme-backend-gpujs-'))
  await esbuild.build({ absWorkingDir: app, entryPoints: files, outdir: 'readme-js', outExtension: { '.js': '.mjs' }, platform: 'node', format: 'esm', logLevel: 'silent' })
  for (const f of files) nodeRun(join('readme-js', f.replace(/\.ts$/, '.mjs')))
  return files.join(', ')
}

// ---- browser --------------------------------------------------------------------------------

const BUNDLES = ['browser-quantizers', 'browser-fast', 'browser-gpujs']

async function bundle() {
  const esbuild = await import('esbuild')
  const r = await esbuild.build({
    absWorkingDir: app,
    entryPoints: BUNDLES.map((b) => `./${b}.js`),
    outdir: 'www',
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: 'es2022',
    metafile: true,
    logLevel: 'silent',
  })
  const sizes = Object.entries(r.metafile.outputs).map(([f, o]) => `${f.replace('www/', '')} ${(o.bytes / 1024).toFixed(0)} KiB`)
  writeFileSync(join(app, 'www', 'index.html'), '<!doctype html><title>tessera consumer check</title>\n')
  return sizes.join(', ')
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm' }

async function runInChromium() {
  if (!existsSync(CHROMIUM)) fail(`no Chromium at ${CHROMIUM} (scripts/setup.sh installs Debian's chromium)`)
  const www = join(app, 'www')
  const server = createServer((req, res) => {
    const file = join(www, decodeURIComponent(new URL(req.url, 'http://x').pathname))
    if (!file.startsWith(www) || !existsSync(file) || !statSync(file).isFile()) return res.writeHead(404).end()
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(readFileSync(file))
  })
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok))
  const { chromium } = await import('playwright-core')
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS })
  const lines = []
  try {
    const page = await browser.newPage()
    const errors = []
    page.on('pageerror', (e) => errors.push(String(e)))
    // localhost is a secure context, which WebGPU needs
    await page.goto(`http://localhost:${server.address().port}/index.html`)
    for (const b of BUNDLES) {
      const got = await page.evaluate(async (url) => {
        try {
          return { lines: await (await import(url)).run() }
        } catch (e) {
          return { error: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) }
        }
      }, `/${b}.js`)
      if (got.error) fail(`${b}.js in Chromium: ${got.error}`)
      lines.push(...got.lines)
    }
    if (errors.length) fail(`page errors: ${errors.join('\n')}`)
  } finally {
    await browser.close()
    server.close()
  }
  return `\n  ${lines.join('\n  ')}`
}

// ---- main -----------------------------------------------------------------------------------

const t0 = Date.now()
try {
  console.log(`consumer check: temp project in ${work}`)
  await step('build and pack', packAll)
  await step('npm install of the tarballs', install)
  await step('Node ESM', () => `\n  ${nodeRun('esm.mjs').split('\n').join('\n  ')}`)
  await step('CommonJS require', () => nodeRun('cjs.cjs'))
  await step('bin', runBin)
  await step('type-check', typecheck)
  await step('README examples run in Node', runReadmes)
  await step('esbuild --platform=browser', bundle)
  await step('headless Chromium', runInChromium)
  console.log(`consumer check: PASSED (${((Date.now() - t0) / 1000).toFixed(0)} s)`)
} catch (e) {
  const msg = e instanceof StepFailure ? e.message : e instanceof Error ? (e.stack ?? e.message) : String(e)
  console.error(`consumer check: FAILED at ${e?.step ?? 'setup'}: ${msg}`)
  process.exitCode = 1
} finally {
  if (keep) console.log(`consumer check: kept ${work}`)
  else rmSync(work, { recursive: true, force: true })
}
