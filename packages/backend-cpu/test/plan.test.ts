import { describe, expect, it } from 'vitest'
import type { HostTensor, Program, Tensor } from '@tessera/core'
import { planKernels, printPlan, tensorOf, traceOrThrow } from '@tessera/core'
import { fusedCpuBackend, interpretProgram } from '../src/index.js'

const f32 = (shape: number[]) => ({ shape, dtype: 'float32' as const })
const i32 = (shape: number[]) => ({ shape, dtype: 'int32' as const })

function seq(shape: number[], scale = 0.37, off = -1): HostTensor {
  const n = shape.reduce((a, b) => a * b, 1)
  return tensorOf(Array.from({ length: n }, (_, i) => Math.sin(i * scale) * 2 + off * 0.1), shape)
}

async function agree(p: Program, inputs: HostTensor[], maxKernelArgs?: number) {
  const want = interpretProgram(p, inputs)
  const exe = fusedCpuBackend({ maxKernelArgs }).compile(p)
  const got = await exe.run(inputs)
  expect(got.length).toBe(want.length)
  got.forEach((g, i) => {
    expect(g.shape).toEqual(want[i]!.shape)
    expect(g.dtype).toBe(want[i]!.dtype)
    expect(Array.from(g.data)).toEqual(Array.from(want[i]!.data))
  })
}

const fsq = (z: Tensor) => {
  // FSQ-like forward with levels [8, 5, 5]: bound, round, scale, pack indices
  const levels = [8, 5, 5]
  const halfL = z.builder.constant(levels.map((l) => ((l - 1) * (1 + 1e-3)) / 2), [3])
  const offset = z.builder.constant(levels.map((l) => (l % 2 === 0 ? 0.5 : 0)), [3])
  const shift = offset.div(halfL).atanh()
  const bounded = z.add(shift).tanh().mul(halfL).sub(offset)
  const halfW = z.builder.constant(levels.map((l) => Math.floor(l / 2)), [3])
  const q = bounded.round().div(halfW)
  const basis = z.builder.constant([1, 8, 40], [3])
  const idx = q.mul(halfW).add(halfW).mul(basis).sum(-1).cast('int32')
  return { q, idx }
}

const nearest = (x: Tensor, cb: Tensor) => {
  const d = x.square().sum(-1, true).sub(x.matmul(cb.mT).mul(2)).add(cb.square().sum(-1).expandDims(0))
  const ind = d.argmin(-1)
  return { ind, q: cb.gather(ind, 0) }
}

describe('fused plan on the CPU', () => {
  it('FSQ forward is two kernels and matches the reference exactly', async () => {
    const t = traceOrThrow([f32([6, 3])], fsq)
    const plan = fusedCpuBackend().plan(t.program)
    expect(planKernels(plan).length).toBeLessThanOrEqual(2)
    expect(printPlan(plan)).toMatchInlineSnapshot(`
      "plan (b0:f32[6,3]) {
        const b1:f32[3]
        const b2:f32[3]
        const b3:f32[3]
        const b5:f32[3]
        alloc b4:f32[6,3]
        b4 = kernel(b0, b2, b1, b3) {
          %1 = b0[i]
          %2 = ixmod<3> i
          %3 = b2[%2]
          %4 = b1[%2]
          %5 = div %3 %4
          %6 = atanh %5
          %7 = add %1 %6
          %8 = tanh %7
          %9 = mul %8 %4
          %10 = sub %9 %3
          %11 = round %10
          %12 = b3[%2]
          %13 = div %11 %12
          return %13
        }
        alloc b6:i32[6]
        b6 = kernel(b4, b3, b5) {
          %3 = mul i 3
          loop r<3 {
            %4 = add %3 r
            %5 = b4[%4]
            %6 = b3[r]
            %7 = mul %5 %6
            %8 = add %7 %6
            %9 = b5[r]
            %10 = mul %8 %9
            %11 = sum %10
          }
          %12 = cast<i32> %11
          return %12
        }
        out (b4, b6)
      }"
    `)
    await agree(t.program, [seq([6, 3])])
  })

  it('nearest-code search is four kernels: the two norms, distances and argmin in one (the dot product a nested loop), gather', async () => {
    const t = traceOrThrow([f32([5, 4]), f32([7, 4])], nearest)
    const plan = fusedCpuBackend().plan(t.program)
    expect(planKernels(plan).length).toBe(4)
    // the distance matrix is never a buffer
    expect(plan.buffers.some((b) => b.shape.join() === '5,7')).toBe(false)
    expect(printPlan(plan)).toMatchInlineSnapshot(`
      "plan (b0:f32[5,4], b1:f32[7,4]) {
        alloc b2:f32[5]
        b2 = kernel(b0) {
          %3 = mul i 4
          loop r<4 {
            %4 = add %3 r
            %5 = b0[%4]
            %6 = mul %5 %5
            %7 = sum %6
          }
          return %7
        }
        alloc b3:f32[7]
        b3 = kernel(b1) {
          %3 = mul i 4
          loop r<4 {
            %4 = add %3 r
            %5 = b1[%4]
            %6 = mul %5 %5
            %7 = sum %6
          }
          return %7
        }
        alloc b4:i32[5]
        b4 = kernel(b2, b0, b1, b3) {
          %2 = b2[i]
          %5 = mul i 4
          loop r<7 {
            %8 = mul r 4
            %16 = b3[r]
            loop r1<4 {
              %6 = add %5 r1
              %7 = b0[%6]
              %9 = add %8 r1
              %10 = b1[%9]
              %11 = mul.wide %7 %10
              %12 = sum %11
            }
            %14 = mul %12 2f
            %15 = sub %2 %14
            %17 = add %15 %16
            %18 = argmin %17
          }
          return %18
        }
        free b2
        free b3
        alloc b5:f32[5,4]
        b5 = kernel(b4, b1) {
          %1 = ixdiv<4> i
          %2 = ixmod<4> i
          %4 = b4[%1]
          %5 = max %4 0
          %7 = min %5 6
          %9 = mul %7 4
          %10 = add %9 %2
          %11 = b1[%10]
          return %11
        }
        out (b4, b5)
      }"
    `)
    await agree(t.program, [seq([5, 4]), seq([7, 4], 0.91, 2)])
  })

  it('movement ops are index arithmetic, never kernels', async () => {
    const t = traceOrThrow([f32([2, 3, 4])], (x: Tensor) =>
      x.transpose([2, 0, 1]).reshape([4, 6]).sliceAxis(1, 1, 5).pad([1, 0], [0, 2], 9).exp(),
    )
    const plan = fusedCpuBackend().plan(t.program)
    expect(planKernels(plan).length).toBe(1)
    expect(printPlan(plan)).toMatchInlineSnapshot(`
      "plan (b0:f32[2,3,4]) {
        alloc b1:f32[5,6]
        b1 = kernel(b0) {
          %1 = ixdiv<6> i
          %2 = ixmod<6> i
          %4 = le 1 %1
          %6 = lt %1 5
          %8 = where %4 %6 false
          %10 = add %1 -1
          %12 = max %10 0
          %13 = le 0 %2
          %15 = lt %2 4
          %16 = where %8 %13 false
          %17 = where %16 %15 false
          %18 = max %2 0
          %20 = min %18 3
          %21 = add %20 1
          %23 = mul %12 6
          %24 = add %23 %21
          %25 = ixdiv<3> %24
          %26 = ixmod<2> %25
          %27 = ixmod<3> %24
          %29 = mul %26 12
          %30 = mul %27 4
          %31 = add %29 %30
          %32 = add %31 %12
          %33 = b0[%32]
          %35 = where %17 %33 9f
          %36 = exp %35
          return %36
        }
        out (b1)
      }"
    `)
    await agree(t.program, [seq([2, 3, 4])])
  })
})
