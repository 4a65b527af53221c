import { golden, goldenUsage } from './golden.js'
import type { Io } from './io.js'
import { EXIT_USAGE } from './io.js'

/** Commands by name; each takes the arguments after its name and returns an exit status. */
const commands: Readonly<Record<string, (args: readonly string[], io: Io) => Promise<number>>> = { golden }

/** `tessera <command> ...`: runs one command and returns its exit status (the caller exits). */
export async function main(argv: readonly string[], io: Io): Promise<number> {
  const [name, ...rest] = argv
  const command = name === undefined ? undefined : commands[name]
  if (!command) {
    io.err(`usage: tessera <command>\ncommands:\n  ${goldenUsage.replace('usage: ', '')}`)
    return EXIT_USAGE
  }
  return command(rest, io)
}
