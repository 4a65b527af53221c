/** What a command reads from and writes to, passed in so tests can run commands without a process. */
export interface Io {
  /** the folder relative paths are resolved against */
  readonly cwd: string
  readonly out: (line: string) => void
  readonly err: (line: string) => void
}

/** Exit statuses: 0 all good, 1 something checked failed, 2 the command could not run (usage, missing backend, unreadable input). */
export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2
