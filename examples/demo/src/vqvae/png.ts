import { PNG } from 'pngjs'
import { IMAGE_SIDE, IMAGE_SIZE } from './digits.js'

/**
 * A grid of digit pairs: each cell is an original with its reconstruction to its right,
 * `perRow` pairs per row, 2-pixel gutters. Values in [0, 1] become grey levels.
 */
export function pairGrid(originals: Float32Array, recons: Float32Array, count: number, perRow = 8): Buffer {
  const gap = 2
  const cellW = 2 * IMAGE_SIDE + gap
  const rows = Math.ceil(count / perRow)
  const width = perRow * (cellW + gap * 2) + gap
  const height = rows * (IMAGE_SIDE + gap) + gap
  const png = new PNG({ width, height })
  png.data.fill(0)
  for (let i = 0; i < png.data.length; i += 4) {
    png.data[i] = 40
    png.data[i + 1] = 40
    png.data[i + 2] = 90
    png.data[i + 3] = 255
  }
  const put = (x: number, y: number, v: number) => {
    const g = Math.round(255 * Math.min(1, Math.max(0, v)))
    const o = (y * width + x) * 4
    png.data[o] = g
    png.data[o + 1] = g
    png.data[o + 2] = g
  }
  for (let n = 0; n < count; n++) {
    const x0 = gap + (n % perRow) * (cellW + gap * 2)
    const y0 = gap + Math.floor(n / perRow) * (IMAGE_SIDE + gap)
    for (let r = 0; r < IMAGE_SIDE; r++)
      for (let c = 0; c < IMAGE_SIDE; c++) {
        put(x0 + c, y0 + r, originals[n * IMAGE_SIZE + r * IMAGE_SIDE + c]!)
        put(x0 + IMAGE_SIDE + gap + c, y0 + r, recons[n * IMAGE_SIZE + r * IMAGE_SIDE + c]!)
      }
  }
  return PNG.sync.write(png)
}
