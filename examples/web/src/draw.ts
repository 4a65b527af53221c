/**
 * Plain canvas drawing for the page: a line plot of a series, a grid of digits with their
 * reconstructions, and a histogram of code counts. No chart library: each is a few dozen lines.
 */
import { IMAGE_SIDE, IMAGE_SIZE } from '../../demo/src/vqvae/digits.js'

const INK = '#1d2433'
const GRID = '#d9dde5'
const PALETTE = ['#2f6fdf', '#d9622b', '#2a9d6f', '#9b4dca']

function context(canvas: HTMLCanvasElement): CanvasRenderingContext2D {
  const ctx = canvas.getContext('2d')
  if (!ctx) throw new Error('no 2D canvas context')
  return ctx
}

export interface SeriesStyle {
  readonly title: string
  readonly color: string
  /** Plot log10 of the values (losses span decades early in training). */
  readonly log?: boolean
  /** Fixed y range (the usage plot is always 0 to 1); otherwise the data's range. */
  readonly range?: readonly [number, number]
  readonly format: (v: number) => string
  /** Steps on the x axis (the plot's width covers this many even before they are done). */
  readonly steps: number
}

/** A line plot of `values` (one per step) with its last value in the title. */
export function drawSeries(canvas: HTMLCanvasElement, values: readonly number[], style: SeriesStyle): void {
  const ctx = context(canvas)
  const { width: w, height: h } = canvas
  const pad = { l: 48, r: 10, t: 22, b: 18 }
  ctx.fillStyle = '#fff'
  ctx.fillRect(0, 0, w, h)
  ctx.font = '12px system-ui, sans-serif'
  ctx.fillStyle = INK
  const last = values[values.length - 1]
  ctx.fillText(`${style.title}${last !== undefined ? `: ${style.format(last)}` : ''}`, pad.l, 14)
  const ys = values.map((v) => (style.log ? Math.log10(Math.max(v, 1e-12)) : v))
  let [lo, hi] = style.range ?? [Math.min(...ys), Math.max(...ys)]
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1]
  if (hi - lo < 1e-9) [lo, hi] = [lo - 0.5, hi + 0.5]
  const x = (i: number) => pad.l + ((w - pad.l - pad.r) * i) / Math.max(1, style.steps - 1)
  const y = (v: number) => pad.t + (h - pad.t - pad.b) * (1 - (v - lo) / (hi - lo))
  ctx.strokeStyle = GRID
  ctx.lineWidth = 1
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4
    ctx.beginPath()
    ctx.moveTo(pad.l, y(v))
    ctx.lineTo(w - pad.r, y(v))
    ctx.stroke()
    ctx.fillText(style.format(style.log ? 10 ** v : v), 2, y(v) + 4)
  }
  ctx.fillText(`step ${values.length} / ${style.steps}`, w - pad.r - 100, h - 4)
  ctx.strokeStyle = style.color
  ctx.lineWidth = 1.5
  ctx.beginPath()
  ys.forEach((v, i) => (i === 0 ? ctx.moveTo(x(i), y(v)) : ctx.lineTo(x(i), y(v))))
  ctx.stroke()
}

/**
 * Digits in pairs of rows: a row of originals, then the same digits reconstructed below, `perRow`
 * to a row, each pixel drawn as a `scale` x `scale` block (grey levels clamped to [0, 1]).
 */
export function drawPairGrid(canvas: HTMLCanvasElement, originals: Float32Array, recons: Float32Array, count: number, perRow: number, scale = 2): void {
  const cell = IMAGE_SIDE * scale + 2
  const rows = Math.ceil(count / perRow)
  canvas.width = perRow * cell
  canvas.height = rows * (2 * cell + 6)
  // the layout, for readers of the pixels (the browser test compares digits with reconstructions)
  Object.assign(canvas.dataset, { cell: String(cell), perRow: String(perRow), count: String(count), scale: String(scale) })
  const ctx = context(canvas)
  ctx.fillStyle = '#fff'
  ctx.fillRect(0, 0, canvas.width, canvas.height)
  const img = ctx.createImageData(IMAGE_SIDE * scale, IMAGE_SIDE * scale)
  const put = (src: Float32Array, i: number, px: number, py: number) => {
    for (let r = 0; r < IMAGE_SIDE * scale; r++)
      for (let c = 0; c < IMAGE_SIDE * scale; c++) {
        const v = src[i * IMAGE_SIZE + Math.floor(r / scale) * IMAGE_SIDE + Math.floor(c / scale)]!
        // white digits on black, as MNIST is usually shown
        const g = Math.round(255 * Math.min(1, Math.max(0, v)))
        const o = 4 * (r * IMAGE_SIDE * scale + c)
        img.data[o] = img.data[o + 1] = img.data[o + 2] = g
        img.data[o + 3] = 255
      }
    ctx.putImageData(img, px, py)
  }
  for (let i = 0; i < count; i++) {
    const px = (i % perRow) * cell + 1
    const py = Math.floor(i / perRow) * (2 * cell + 6) + 1
    put(originals, i, px, py)
    put(recons, i, px, py + cell)
  }
}

/**
 * Code counts as bars, codebook after codebook (each its own colour), heights on a square-root
 * scale so rarely used codes still show; the title gives used codes and perplexity.
 */
export function drawHistogram(canvas: HTMLCanvasElement, counts: readonly Float64Array[], title: string): void {
  const ctx = context(canvas)
  const { width: w, height: h } = canvas
  const pad = { l: 8, r: 8, t: 22, b: 6 }
  ctx.fillStyle = '#fff'
  ctx.fillRect(0, 0, w, h)
  ctx.font = '12px system-ui, sans-serif'
  ctx.fillStyle = INK
  ctx.fillText(title, pad.l, 14)
  const bars = counts.reduce((n, c) => n + c.length, 0)
  const max = Math.max(1, ...counts.map((c) => Math.max(...c)))
  const bw = (w - pad.l - pad.r) / Math.max(1, bars)
  let at = 0
  counts.forEach((c, q) => {
    ctx.fillStyle = PALETTE[q % PALETTE.length]!
    for (const n of c) {
      const bh = (h - pad.t - pad.b) * Math.sqrt(n / max)
      if (n > 0) ctx.fillRect(pad.l + at * bw, h - pad.b - bh, Math.max(1, bw - (bw > 3 ? 1 : 0)), bh)
      at++
    }
  })
}
