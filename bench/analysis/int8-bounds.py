"""How many candidates an exact int8 screen of the nearest-code search would leave per row.

The screened kernels (packages/backend-fast/src/nearest-screen.ts) bound every distance from an
int16 dot product and compute in float32 only the codes whose lower bound is at or below the
row's least upper bound. WebAssembly's 8-bit dot products (i16x8.relaxed_dot_i8x16_i7x16_s: one
operand 7-bit) run twice as many multiply-adds per instruction, but round the operands far more
coarsely. This draws the bench's nearest-code inputs (standard normal rows and codes), rounds them
as the kernels do (power-of-two scales: per row, and one for the codebook), bounds each dot product
by the rounding errors (|x - x'| |c| + |x'| |c - c'| summed), and counts per row the codes whose
lower bound is at or below the least upper bound, and how often no two of them share one of the
kernel's 4 lanes (the kernel's rule for settling a row without computing it whole in float32).

Run: python3 bench/analysis/int8-bounds.py (numpy; Debian python3-numpy). Results are in
bench/README.md, section of 2026-12-07 09:30-11:40 UTC.
"""
import numpy as np


def pow2_at_least(v):
    return 2.0 ** np.ceil(np.log2(v))


def candidates(n, d, k, x_bits, c_bits, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    c = rng.standard_normal((k, d)).astype(np.float32)
    x_max, c_max = 2 ** (x_bits - 1) - 1, 2 ** (c_bits - 1) - 1
    sx = pow2_at_least(np.abs(x).max(1) / x_max)[:, None]
    sc = pow2_at_least(np.abs(c).max() / c_max)
    xq, cq = np.round(x / sx), np.round(c / sc)
    dot = (xq @ cq.T) * sx * sc
    err = (sx / 2) * np.abs(c).sum(1).max() + (sc / 2) * sx * np.abs(xq).sum(1, keepdims=True)
    cc = (c.astype(np.float64) ** 2).sum(1)
    lower, upper = cc - 2 * (dot + err), cc - 2 * (dot - err)
    cand = lower <= upper.min(1, keepdims=True)
    per_lane = np.stack([cand[:, lane::4].sum(1) for lane in range(4)], 1)
    return cand.sum(1), (per_lane <= 1).all(1)


if __name__ == '__main__':
    for n, d, k, name in [(4000, 64, 1024, 'W1'), (2000, 256, 4096, 'W1b')]:
        for xb, cb in [(7, 8), (8, 8), (12, 12), (16, 16)]:
            cnt, settled = candidates(n, d, k, xb, cb)
            print(f'{name} (D={d} K={k}) rows {xb}-bit, codes {cb}-bit: candidates per row mean {cnt.mean():.2f}, '
                  f'median {np.median(cnt):.0f}, p90 {np.percentile(cnt, 90):.0f}, max {cnt.max()}; '
                  f'one candidate {np.mean(cnt == 1):.2f}; no lane with two {settled.mean():.2f}')
