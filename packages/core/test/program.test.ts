import fc from 'fast-check'
import { describe, expect, test } from 'vitest'
import type { Aval, Tensor } from '../src/index.js'
import { concat, flatten, flattenAs, hashProgram, printProgram, traceOrThrow, unflatten, where } from '../src/index.js'

const f32 = (...shape: number[]): Aval => ({ shape, dtype: 'float32' })

/** Nearest codebook row for each input row: the core of vector quantization. */
const nearest = (x: Tensor, codes: Tensor) => {
  const d = x.square().sum(1, true).sub(x.matmul(codes.mT).mul(2)).add(codes.square().sum(1))
  const idx = d.argmin(1)
  return { idx, quantized: codes.gather(idx, 0) }
}

describe('printProgram', () => {
  test('prints a traced program like a jaxpr', () => {
    const { program } = traceOrThrow([f32(4, 3), f32(5, 3)], nearest)
    expect(printProgram(program)).toMatchInlineSnapshot(`
      "{ lambda a:f32[4,3] b:f32[5,3] .
        c:f32[4,3] = mul a a
        d:f32[4] = reduce_sum[axes=[1]] c
        e:f32[4,1] = reshape[shape=[4,1]] d
        f:f32[3,5] = transpose[perm=[1,0]] b
        g:f32[4,5] = matmul a f
        h:f32[] = full[dtype="float32" shape=[] value=2]
        i:f32[4,5] = broadcast[shape=[4,5]] h
        j:f32[4,5] = mul g i
        k:f32[4,5] = broadcast[shape=[4,5]] e
        l:f32[4,5] = sub k j
        m:f32[5,3] = mul b b
        n:f32[5] = reduce_sum[axes=[1]] m
        o:f32[4,5] = broadcast[shape=[4,5]] n
        p:f32[4,5] = add l o
        q:i32[4] = argmin[axis=1] p
        r:f32[4,3] = gather[axis=0] b q
        in (q, r) }"
    `)
  })

  test('prints params, constants (abbreviated) and several outputs', () => {
    const { program } = traceOrThrow([f32(2, 3), { shape: [2], dtype: 'int32' } as Aval], (x: Tensor, k: Tensor) => {
      const c = x.builder.constant([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3])
      const y = concat([x.expandDims(0), x.neg().expandDims(0)], 0).add(c)
      const r = x.builder.randomUniform(k, [2, 3])
      return [where(r.lt(0.5), x, 0).sliceAxis(1, 0, 3, 2).pad([0, 1], [1, 0], -1), y.transpose([2, 0, 1]).cast('int32')]
    })
    expect(printProgram(program)).toMatchInlineSnapshot(`
      "{ lambda a:f32[2,3] b:i32[2] .
        c:f32[2,2,3] = constant[data=[1,2,3,4,…(12)] dtype="float32" shape=[2,2,3]]
        d:f32[1,2,3] = reshape[shape=[1,2,3]] a
        e:f32[2,3] = neg a
        f:f32[1,2,3] = reshape[shape=[1,2,3]] e
        g:f32[2,2,3] = concat[axis=0] d f
        h:f32[2,2,3] = add g c
        i:f32[2,3] = random_uniform[shape=[2,3]] b
        j:f32[] = full[dtype="float32" shape=[] value=0.5]
        k:f32[2,3] = broadcast[shape=[2,3]] j
        l:bool[2,3] = lt i k
        m:f32[] = full[dtype="float32" shape=[] value=0]
        n:f32[2,3] = broadcast[shape=[2,3]] m
        o:f32[2,3] = where l a n
        p:f32[2,2] = slice[end=[2,3] start=[0,0] step=[1,2]] o
        q:f32[3,3] = pad[hi=[1,0] lo=[0,1] value=-1] p
        r:f32[3,2,2] = transpose[perm=[2,0,1]] h
        s:i32[3,2,2] = cast[dtype="int32"] r
        in (q, s) }"
    `)
  })

  test('two traces of one function print the same; full prints whole constants', () => {
    const build = () => traceOrThrow([f32(12)], (x) => x.add(x.builder.constant([...Array(12).keys()], [12]))).program
    const a = build()
    const b = build()
    expect(printProgram(a)).toBe(printProgram(b))
    expect(printProgram(a, { full: true })).toContain('data=[0,1,2,3,4,5,6,7,8,9,10,11]')
    expect(printProgram(a)).toContain('data=[0,1,2,3,…(12)]')
  })
})

describe('hashProgram', () => {
  const prog = (scale: number, shape = [4, 3], data = [1, 2, 3]) =>
    traceOrThrow([f32(...shape), f32(5, 3)], (x: Tensor, c: Tensor) => nearest(x.mul(scale).add(x.builder.constant(data, [3])), c)).program

  test('equal for the same structure traced twice', () => {
    expect(hashProgram(prog(2))).toBe(hashProgram(prog(2)))
    expect(hashProgram(prog(2))).toMatch(/^[0-9a-f]{14}$/)
  })

  test('different for different params, constants, shapes or structure', () => {
    const h = hashProgram(prog(2))
    expect(hashProgram(prog(3))).not.toBe(h)
    expect(hashProgram(prog(2, [6, 3]))).not.toBe(h)
    expect(hashProgram(prog(2, [4, 3], [1, 2, 4]))).not.toBe(h)
    const argmaxInstead = traceOrThrow([f32(4, 3), f32(5, 3)], (x: Tensor, c: Tensor) => x.matmul(c.mT).argmax(1)).program
    const argminInstead = traceOrThrow([f32(4, 3), f32(5, 3)], (x: Tensor, c: Tensor) => x.matmul(c.mT).argmin(1)).program
    expect(hashProgram(argmaxInstead)).not.toBe(hashProgram(argminInstead))
  })

  test('sees constant data beyond what the short print shows', () => {
    const withData = (last: number) =>
      traceOrThrow([f32(20)], (x) => x.add(x.builder.constant([...Array(19).fill(1), last], [20]))).program
    expect(printProgram(withData(1))).toBe(printProgram(withData(2)))
    expect(hashProgram(withData(1))).not.toBe(hashProgram(withData(2)))
  })
})

describe('trees', () => {
  type Leaf = { readonly leaf: number }
  const isLeaf = (x: unknown): x is Leaf => typeof x === 'object' && x !== null && 'leaf' in x
  const treeArb = fc.letrec<{ tree: unknown }>((tie) => ({
    tree: fc.oneof(
      { depthSize: 'small', maxDepth: 4 },
      fc.integer().map((leaf): Leaf => ({ leaf })),
      fc.array(tie('tree'), { maxLength: 4 }),
      fc.dictionary(fc.string({ minLength: 1, maxLength: 3 }).filter((k) => k !== 'leaf' && k !== '__proto__'), tie('tree'), { maxKeys: 4, noNullPrototype: true }),
    ),
  })).tree

  test('unflatten(flatten(t)) rebuilds t; leaves come out depth first', () => {
    fc.assert(
      fc.property(treeArb, (t) => {
        const { leaves, def } = flatten(t, isLeaf)
        expect(unflatten(def, leaves)).toEqual(t)
        const order: number[] = []
        const walk = (x: unknown): void => {
          if (isLeaf(x)) order.push(x.leaf)
          else if (Array.isArray(x)) x.forEach(walk)
          else Object.values(x as object).forEach(walk)
        }
        walk(t)
        expect(leaves.map((l) => l.leaf)).toEqual(order)
      }),
      { numRuns: 200 },
    )
  })

  test('unflatten with new leaves maps them into the same structure', () => {
    const t = { a: [{ leaf: 1 }, { leaf: 2 }], b: { c: { leaf: 3 } }, d: [] }
    const { leaves, def } = flatten(t, isLeaf)
    expect(unflatten(def, leaves.map((l) => l.leaf * 10))).toEqual({ a: [10, 20], b: { c: 30 }, d: [] })
  })

  test('wrong leaf count and unsupported values are errors naming the path', () => {
    const { def } = flatten([{ leaf: 1 }, { leaf: 2 }], isLeaf)
    expect(() => unflatten(def, [1])).toThrow(/structure has 2 leaves, got 1/)
    expect(() => flatten({ a: [1, 'x'] }, isLeaf, 'params')).toThrow(/params\.a\[0\] is a number/)
    expect(() => flatten({ m: new Map() }, isLeaf, 'state')).toThrow(/state\.m is an object of an unsupported class/)
  })

  test('undefined and null are kept as empty slots', () => {
    const { leaves, def } = flatten({ a: undefined, b: { leaf: 1 } }, isLeaf)
    expect(leaves).toHaveLength(1)
    expect(unflatten(def, [5])).toEqual({ a: undefined, b: 5 })
  })

  test("flatten's paths name each leaf; a key that is not an identifier is quoted", () => {
    const { paths } = flatten({ a: [{ leaf: 1 }], 'b.c': { leaf: 2 } }, isLeaf, 'state')
    expect(paths).toEqual(['state.a[0]', 'state["b.c"]'])
  })

  test('flattenAs(def, t) gives the entries of any tree flatten gives def for, in its order', () => {
    fc.assert(
      fc.property(treeArb, (t) => {
        const { leaves, def } = flatten(t, isLeaf)
        expect(flattenAs(def, t).leaves).toEqual(leaves)
        // a tree with nothing in it: every entry undefined, one per leaf
        expect(flattenAs(def, undefined).leaves).toEqual(leaves.map(() => undefined))
      }),
      { numRuns: 200 },
    )
  })

  test('flattenAs: parts left out are undefined entries; what def has not is an error naming its path', () => {
    const { def } = flatten({ q: { leaf: 1 }, s: { 'x.y': { leaf: 2 }, z: { leaf: 3 } }, l: [{ leaf: 4 }, { leaf: 5 }], n: undefined }, isLeaf)
    const got = flattenAs(def, { s: { z: 'Z' }, l: ['A'] }, 'run', 'into')
    expect(got.leaves).toEqual([undefined, undefined, 'Z', 'A', undefined])
    expect(got.paths).toEqual(['into.q', 'into.s["x.y"]', 'into.s.z', 'into.l[0]', 'into.l[1]'])
    expect(() => flattenAs(def, { w: 1 }, 'run', 'into')).toThrow(/into\.w has no counterpart \(entries here: "q", "s", "l", "n"\)/)
    expect(() => flattenAs(def, { s: { 'x.z': 1 } }, 'run', 'into')).toThrow(/into\.s\["x\.z"\] has no counterpart/)
    expect(() => flattenAs(def, { l: [1, 2, 3] }, 'run', 'into')).toThrow(/into\.l has 3 entries; 2 expected/)
    expect(() => flattenAs(def, { l: { 0: 1 } }, 'run', 'into')).toThrow(/into\.l must be an array of 2 entries, got an object/)
    expect(() => flattenAs(def, { s: [1] }, 'run', 'into')).toThrow(/into\.s must be a plain object with entries "x\.y", "z", got a plain array of length 1/)
    expect(() => flattenAs(def, { n: 1 }, 'run', 'into')).toThrow(/into\.n has no counterpart: that entry is absent here/)
    expect(() => flattenAs(def, new Float32Array(2), 'run', 'into')).toThrow(/into must be a plain object .*got a Float32Array/)
  })
})
