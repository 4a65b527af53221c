// The two untyped dependencies the demo uses, declared only as far as it uses them.
declare module 'pngjs' {
  export class PNG {
    constructor(opts: { width: number; height: number })
    readonly width: number
    readonly height: number
    data: Buffer
    static sync: { write(png: PNG): Buffer; read(buf: Buffer): PNG }
  }
}

declare module 'cli-progress' {
  export interface Options {
    format?: string
    barsize?: number
    hideCursor?: boolean
    clearOnComplete?: boolean
    stopOnComplete?: boolean
    noTTYOutput?: boolean
    notTTYSchedule?: number
    etaBuffer?: number
  }
  export class SingleBar {
    constructor(opts: Options, preset?: unknown)
    start(total: number, start: number, payload?: Record<string, unknown>): void
    update(value: number, payload?: Record<string, unknown>): void
    stop(): void
  }
  export const Presets: { shades_classic: unknown; legacy: unknown; rect: unknown }
}
