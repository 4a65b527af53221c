// docs/QUANTIZERS.md stays true to the code: every option named in a section's option table is a
// key its factory accepts, and every literal default (a number, true, false, null) is the value
// the decoded config holds when the option is left out.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, test } from 'vitest'
import * as Q from '../../packages/quantizers/src/index.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const doc = readFileSync(join(root, 'docs', 'QUANTIZERS.md'), 'utf8')

interface Factory {
  readonly name: string
  /** returns an Either without importing fp-ts here */
  readonly decode: (o: unknown) => { _tag: 'Left'; left: Error } | { _tag: 'Right'; right: unknown }
  /** the smallest valid config: the required options only */
  readonly minimal: Readonly<Record<string, unknown>>
}

const f = (name: string, decode: Factory['decode'], minimal: Factory['minimal']): Factory => ({ name, decode, minimal })

/** Section heading -> the factories its option table describes. */
const sections: Readonly<Record<string, readonly Factory[]>> = {
  FSQ: [f('decodeFSQ', Q.decodeFSQ, { levels: [8, 5, 5, 5] })],
  LFQ: [f('decodeLFQ', Q.decodeLFQ, { codebook_size: 16 })],
  FSP: [f('decodeFSP', Q.decodeFSP, { levels: [8, 5, 5, 5] })],
  BinaryMapper: [f('decodeBinaryMapper', Q.decodeBinaryMapper, {})],
  LatentQuantize: [f('decodeLatentQuantize', Q.decodeLatentQuantize, { levels: [5, 5], dim: 2 })],
  VectorQuantize: [f('decodeVQ', Q.decodeVQ, { dim: 4, codebook_size: 8 })],
  SimVQ: [f('decodeSimVQ', Q.decodeSimVQ, { dim: 4, codebook_size: 8 })],
  RandomProjectionQuantizer: [f('decodeRPQ', Q.decodeRPQ, { dim: 4, codebook_size: 8, codebook_dim: 2 })],
  ResidualVQ: [f('decodeRVQ', Q.decodeRVQ, { dim: 4, codebook_size: 8, num_quantizers: 2 })],
  ResidualFSQ: [f('decodeResidualFSQ', Q.decodeResidualFSQ, { levels: [5, 5], num_quantizers: 2 })],
  ResidualLFQ: [f('decodeResidualLFQ', Q.decodeResidualLFQ, { dim: 4, codebook_size: 16, num_quantizers: 2 })],
  ResidualSimVQ: [f('decodeResidualSimVQ', Q.decodeResidualSimVQ, { dim: 4, codebook_size: 8, num_quantizers: 2 })],
  HierarchicalVQ: [f('decodeHierarchicalVQ', Q.decodeHierarchicalVQ, { dim: 4, codebook_size: 8, scales: [1, 2], accept_image_fmap: true })],
  'The grouped combinator': [
    f('decodeGroupedResidualVQ', Q.decodeGroupedResidualVQ, { dim: 4, codebook_size: 8, num_quantizers: 2 }),
    f('decodeGroupedResidualFSQ', Q.decodeGroupedResidualFSQ, { dim: 2, levels: [5, 5], num_quantizers: 2 }),
    f('decodeGroupedResidualLFQ', Q.decodeGroupedResidualLFQ, { dim: 4, codebook_size: 16, num_quantizers: 2 }),
  ],
}

interface Row {
  readonly line: number
  readonly options: readonly string[]
  /** literal defaults paired with options, where the default cell lists one per option */
  readonly defaults: readonly (number | boolean | null | undefined)[]
}

const OPTION = /^[a-z][a-z0-9_]*$/

function literal(cell: string): number | boolean | null | undefined {
  const c = cell.trim()
  if (c === 'true') return true
  if (c === 'false') return false
  if (c === 'null') return null
  return /^-?\d+(\.\d+)?(e-?\d+)?$/.test(c) ? Number(c) : undefined
}

/** The option-table rows of the section under `heading` (up to the next heading). */
export function optionRows(markdown: string, heading: string): Row[] {
  const lines = markdown.split('\n')
  const start = lines.findIndex((l) => /^#{2,3} /.test(l) && l.replace(/^#+ /, '').trim() === heading)
  if (start < 0) return []
  const rows: Row[] = []
  let inTable = false
  for (let i = start + 1; i < lines.length && !/^#{1,3} /.test(lines[i]!); i++) {
    const l = lines[i]!
    if (!l.startsWith('|')) {
      inTable = false
      continue
    }
    const cells = l.split('|').slice(1, -1).map((c) => c.trim())
    if (cells[0] === 'option') {
      inTable = true
      continue
    }
    if (!inTable || /^-+$/.test(cells[0]!)) continue
    const options = [...cells[0]!.matchAll(/`([^`]+)`/g)].map((m) => m[1]!).filter((o) => OPTION.test(o))
    const parts = (cells[1] ?? '').split(',')
    const defaults = parts.length === options.length ? parts.map((p) => literal(p.replace(/`/g, ''))) : []
    rows.push({ line: i + 1, options, defaults })
  }
  return rows
}

/** Where a decoded config keeps an option: at the top, or in the layer / group config it is passed to. */
function lookup(cfg: unknown, name: string): { found: boolean; value?: unknown } {
  const places: unknown[] = [cfg]
  const rec = cfg as Record<string, unknown>
  for (const k of ['inner', 'layer', 'vq']) if (rec[k] && typeof rec[k] === 'object') places.push(rec[k])
  for (const p of [...places]) {
    const layers = (p as Record<string, unknown>)['layers']
    if (Array.isArray(layers) && layers.length > 0) places.push(layers[0])
  }
  for (const p of places) if (p && typeof p === 'object' && name in p) return { found: true, value: (p as Record<string, unknown>)[name] }
  return { found: false }
}

describe('optionRows', () => {
  test('reads option names and paired literal defaults from the section table only', () => {
    const md = ['## A', '| option | default |', '|---|---|', '| `x`, `y_z` | 1, false |', '| `w` | `dim` |', 'text `not_this`', '## B', '| option | default |', '|---|---|', '| `b` | 2 |'].join('\n')
    expect(optionRows(md, 'A')).toEqual([
      { line: 4, options: ['x', 'y_z'], defaults: [1, false] },
      { line: 5, options: ['w'], defaults: [undefined] },
    ])
  })
})

describe('docs/QUANTIZERS.md option tables', () => {
  let checkedDefaults = 0
  test.each(Object.entries(sections))('%s: every listed option exists, literal defaults match', (heading, factories) => {
    const rows = optionRows(doc, heading)
    const names = rows.flatMap((r) => r.options)
    expect(names.length, `no option table under "${heading}"`).toBeGreaterThan(0)
    for (const fac of factories) {
      const base = fac.decode(fac.minimal)
      expect(base._tag, `${fac.name}(${JSON.stringify(fac.minimal)}) should decode`).toBe('Right')
      if (base._tag !== 'Right') continue
      for (const row of rows) {
        row.options.forEach((name, k) => {
          if (!(name in fac.minimal)) {
            const r = fac.decode({ ...fac.minimal, [name]: undefined })
            const unknown = r._tag === 'Left' && r.left.message.includes(`unknown key "${name}"`)
            expect(unknown, `QUANTIZERS.md:${row.line}: ${fac.name} does not know option "${name}"`).toBe(false)
          }
          const want = row.defaults[k]
          if (want === undefined || name in fac.minimal) return
          const got = lookup(base.right, name)
          if (!got.found) return
          // a resolved config may hold a richer value for a flag (an object, or null for "off"): skip
          // those; a primitive of another kind is a wrong default and fails below
          const kind = (v: unknown) => (v === null ? 'null' : typeof v)
          if (kind(got.value) !== kind(want) && (got.value === null || typeof got.value === 'object')) return
          expect(got.value, `QUANTIZERS.md:${row.line}: default of ${name} (${fac.name})`).toBe(want)
          checkedDefaults++
        })
      }
    }
  })

  test('a wrong option name or default would be caught (the checks are not vacuous)', () => {
    expect(checkedDefaults).toBeGreaterThanOrEqual(40)
    const r = Q.decodeFSQ({ levels: [8], lvls: undefined })
    expect(r._tag === 'Left' && r.left.message.includes('unknown key "lvls"')).toBe(true)
  })
})

describe('docs/QUANTIZERS.md parameter and state names', () => {
  // configs that between them switch on every optional parameter and buffer the page names
  const built = [
    Q.fsq({ levels: [8, 5, 5, 5], dim: 8, orthogonal_rotation: true }),
    Q.lfq({ codebook_size: 16, dim: 8, orthogonal_rotation: true }),
    Q.latentQuantize({ levels: [5, 5], dim: 4 }),
    Q.latentQuantize({ levels: [5, 5], dim: 2, optimize_values: false }),
    Q.vectorQuantize({ dim: 4, codebook_size: 8, codebook_dim: 3 }),
    Q.vectorQuantize({ dim: 4, codebook_size: 8, codebook_dim: 3, layernorm_after_project_in: true }),
    Q.vectorQuantize({ dim: 4, codebook_size: 8, learnable_codebook: true, ema_update: false }),
    Q.vectorQuantize({ dim: 4, codebook_size: 8, affine_param: true }),
    Q.simVQ({ dim: 4, codebook_size: 8 }),
    Q.fsp({ levels: [5, 5], dim: 4 }),
    Q.binaryMapper({ bits: 2 }),
    Q.randomProjectionQuantizer({ dim: 4, codebook_size: 8, codebook_dim: 2, num_codebooks: 2 }),
    Q.residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2 }),
    Q.residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, shared_codebook: true }),
    Q.residualVQ({ dim: 4, codebook_size: 8, num_quantizers: 2, implicit_neural_codebook: true, mlp_kwargs: { depth: 1 } }),
    Q.residualFSQ({ levels: [5, 5], num_quantizers: 2, dim: 4 }),
    Q.residualLFQ({ dim: 4, codebook_size: 16, num_quantizers: 2 }),
    Q.residualSimVQ({ dim: 4, codebook_size: 8, num_quantizers: 2 }),
    Q.groupedResidualVQ({ dim: 8, groups: 2, codebook_size: 8, num_quantizers: 2 }),
    Q.hierarchicalVQ({ dim: 4, codebook_size: 8, scales: [1, 2], accept_image_fmap: true }),
    Q.hierarchicalVQ({ dim: 4, codebook_size: 8, scales: [1, 2], accept_image_fmap: true, share_quant_resi: 0 }),
  ]
  const names = new Set<string>()
  for (const b of built) {
    if (b._tag === 'Left') throw b.left
    for (const n of [...Object.keys(b.right.paramSpecs), ...Object.keys(b.right.stateSpecs)]) names.add(n)
  }
  const prose = doc.replace(/```[\s\S]*?```/g, '')
  const ticked = new Set([...prose.matchAll(/`([^`\s]+)`/g)].map((m) => m[1]!))
  /** dotted or underscore-led names, with {q}/{g}/{i} for a number and * for any rest */
  const dotted = [...ticked].filter(
    (t) => /^_?[a-z][a-z0-9_]*(\.(\{[a-z]\}|[a-z0-9_]+|\*))+$|^_[a-z_]+$/.test(t) && !/^(extra|losses|opts|result)\./.test(t) && !t.endsWith('.ts'),
  )
  /** single-word names the page gives as parameters or buffers */
  const plain = ['scales', 'soft_clamp_input_value', 'mask', 'codebook', 'implicit_codebook', 'orthogonal_rot', 'frozen_codebook', 'rand_projs', 'commitment_loss_weight', 'quantization_loss_weight']
  const matches = (pattern: string) => {
    const re = new RegExp(`^${pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&').replace(/\\\{[a-z]\\\}/g, '\\d+').replace(/\\\*/g, '.+')}$`)
    return [...names].some((n) => re.test(n))
  }

  test('every dotted name on the page is a parameter or buffer of some quantizer', () => {
    expect(dotted.length).toBeGreaterThanOrEqual(20)
    expect(dotted.filter((t) => !matches(t))).toEqual([])
  })

  test('the single-word buffer names the page uses exist (and are on the page)', () => {
    expect(plain.filter((t) => !ticked.has(t))).toEqual([])
    expect(plain.filter((t) => !matches(t))).toEqual([])
  })

  test('the matcher rejects a name no quantizer has', () => {
    expect(matches('layers.{q}._codebook.embedding')).toBe(false)
    expect(matches('layers.{q}._codebook.embed')).toBe(true)
  })
})
