import { createRequire } from 'node:module'
import type { Plugin } from 'vite'
import { defaultClientConditions, defineConfig } from 'vite'
import { encodeDigits } from './src/asset.js'

const ASSET = 'mnist-digits.bin'

/** The `mnist` package's ten digit files, read at build time (Node). */
function readPackageDigits(): number[][] {
  const require = createRequire(import.meta.url)
  return Array.from({ length: 10 }, (_, d) => (require(`mnist/src/digits/${d}.json`) as { data: number[] }).data)
}

/**
 * Serves the digits as `/mnist-digits.bin` under `vite` (dev) and emits the same file into the
 * build, so the page fetches a same-origin static asset and nothing is downloaded at run time.
 * The bytes are encoded once, on first request or at bundle time.
 */
function mnistAsset(): Plugin {
  let bytes: Uint8Array | undefined
  const get = () => (bytes ??= encodeDigits(readPackageDigits()))
  return {
    name: 'tessera-mnist-asset',
    configureServer(server) {
      server.middlewares.use(`/${ASSET}`, (_req, res) => {
        res.setHeader('Content-Type', 'application/octet-stream')
        res.end(get())
      })
    },
    generateBundle() {
      this.emitFile({ type: 'asset', fileName: ASSET, source: get() })
    },
  }
}

export default defineConfig({
  // relative asset URLs, so the built page works from any folder it is served from
  base: './',
  // workspace packages resolve to their TS sources (as in vitest and tsx), so no `pnpm build` first
  resolve: { conditions: ['@tessera/source', ...defaultClientConditions] },
  plugins: [mnistAsset()],
  build: { target: 'es2022', chunkSizeWarningLimit: 4096 },
})
