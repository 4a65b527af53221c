import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { Plugin } from 'esbuild'
import { build } from 'esbuild'

/**
 * The child process runs from a JavaScript bundle of `child.ts` built once per bench run, under
 * plain `node`: running it under tsx costs every measured process ~29 MB of RSS for tsx's loader
 * thread (a second V8 isolate) and the in-memory transpiled sources, which is the harness's
 * memory, not the measured implementation's. Each implementation's code is a separate chunk
 * (dynamic imports with code splitting), so a process loads only the implementation it runs.
 * Packages with native parts or large sources stay external and are loaded from bench's
 * node_modules (gpu.js is a dependency of bench for that reason too), which is why the bundle is
 * written under it.
 */
export const EXTERNAL = ['onnxruntime-node', 'gpu.js'] as const

/**
 * tfjs is bundled from its ES modules (each package's `module` entry), not loaded from its
 * CommonJS builds: tfjs-core's gradients (needed by the TRAIN step's `tf.variableGrads`) ship only
 * as ES modules (`dist/register_all_gradients.js`, registered by the `@tensorflow/tfjs` union
 * package, not installed here), and they must register into the same engine as the backends.
 */
function tfjsFromModules(benchDir: string): Plugin {
  const req = createRequire(join(benchDir, 'package.json'))
  return {
    name: 'tfjs-from-modules',
    setup(b) {
      b.onResolve({ filter: /^@tensorflow\/tfjs-(core|backend-cpu|backend-wasm)$/ }, (args) => {
        const pkgJson = req.resolve(`${args.path}/package.json`)
        const pkg = req(pkgJson) as { module: string }
        return { path: join(dirname(pkgJson), pkg.module) }
      })
    },
  }
}

/** Builds the child bundle into `outDir` (under bench/) and returns the entry file's path. */
export async function bundleChild(srcDir: string, outDir: string): Promise<string> {
  return bundleEntry(srcDir, join(srcDir, 'child.ts'), outDir, 'child')
}

/** Builds `entry` (a module under `srcDir`) as the child is built, into `outDir` as `<name>.mjs`; returns that path. */
export async function bundleEntry(srcDir: string, entry: string, outDir: string, name: string): Promise<string> {
  await build({
    entryPoints: { [name]: entry },
    outdir: outDir,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // the workspace packages' TypeScript sources, as tsx resolves them in the rest of the repo
    conditions: ['@tessera/source'],
    external: [...EXTERNAL],
    plugins: [tfjsFromModules(join(srcDir, '..'))],
    // the ONNX schema (src/onnx/onnx.proto3) is read as a string by the models' encoder
    loader: { '.proto3': 'text' },
    // CommonJS dependencies (fp-ts/lib, io-ts) may call require for node builtins; tfjs-backend-wasm's
    // emscripten loader reads __dirname in Node (the .wasm paths themselves are set explicitly)
    banner: {
      js:
        "import { createRequire as __benchCreateRequire } from 'node:module'; const require = __benchCreateRequire(import.meta.url); " +
        "import { fileURLToPath as __benchFileURLToPath } from 'node:url'; const __filename = __benchFileURLToPath(import.meta.url); const __dirname = __benchFileURLToPath(new URL('.', import.meta.url));",
    },
    logLevel: 'warning',
  })
  return join(outDir, `${name}.mjs`)
}
