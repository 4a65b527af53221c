import { defineConfig } from 'vitest/config'
import { defaultClientConditions, defaultServerConditions } from 'vite'
import { playwright } from '@vitest/browser-playwright'

// Flags checked against Debian's chromium (TOOLCHAIN §5); --enable-unsafe-webgpu gives a SwiftShader WebGPU adapter.
const chromiumArgs = [
  '--no-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--enable-unsafe-webgpu',
]

const nodeProject = (name: string) => ({
  extends: true as const,
  // browser tests run in the 'browser' project, in Chromium
  test: { name, root: `packages/${name}`, include: ['test/**/*.test.ts'], exclude: ['test/**/*.browser.test.ts'] },
})

export default defineConfig({
  // workspace packages resolve to their TS sources (the "@tessera/source" export condition): no build before tests
  resolve: { conditions: ['@tessera/source', ...defaultClientConditions] },
  ssr: { resolve: { conditions: ['@tessera/source', ...defaultServerConditions] } },
  test: {
    passWithNoTests: true,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    projects: [
      nodeProject('core'),
      nodeProject('backend-cpu'),
      nodeProject('quantizers'),
      nodeProject('backend-fast'),
      nodeProject('nn'),
      nodeProject('cli'),
      { extends: true as const, test: { name: 'demo', root: 'examples/demo', include: ['test/**/*.test.ts'] } },
      // bench: the harness's own logic (the measurements themselves run under `pnpm bench`)
      { extends: true as const, test: { name: 'bench', root: 'bench', include: ['test/**/*.test.ts'] } },
      // web: builds examples/web with vite and drives the page in Debian's Chromium through playwright-core
      { extends: true as const, test: { name: 'web', root: 'examples/web', include: ['test/**/*.test.ts'] } },
      // docs: runs every ```ts run block of README.md and docs/*.md as a script (child processes: forks)
      { extends: true as const, test: { name: 'docs', root: '.', include: ['docs/test/**/*.test.ts'], pool: 'forks' as const } },
      {
        extends: true,
        test: {
          name: 'backend-gpujs',
          root: 'packages/backend-gpujs',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.browser.test.ts'],
          pool: 'forks', // gl is a NAN addon: worker threads cannot load it
        },
      },
      {
        extends: true,
        test: {
          name: 'browser',
          // every package's browser tests (gpu.js webgl2/webgpu, backend-fast, quantizers) in one Chromium
          root: '.',
          include: ['packages/*/test/**/*.browser.test.ts'],
          browser: {
            enabled: true,
            headless: true,
            provider: playwright({ launchOptions: { executablePath: '/usr/bin/chromium', args: chromiumArgs } }),
            instances: [{ browser: 'chromium' }],
          },
        },
      },
    ],
  },
})
