#!/usr/bin/env node
import { main } from './main.js'

// `pnpm golden` runs this from the workspace root; INIT_CWD is the folder the user typed it in.
const cwd = process.env['INIT_CWD'] ?? process.cwd()
const status = await main(process.argv.slice(2), { cwd, out: (l) => console.log(l), err: (l) => console.error(l) })
// exit explicitly: a backend may keep worker threads or a GL context alive
process.exit(status)
