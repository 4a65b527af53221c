#!/usr/bin/env python3
"""Write packages/quantizers/test/fixtures/latent-straight-through.json: LatentQuantize's value
grids for L = 2..16, and its codes and indices as torch computes them in float32, for inputs where the straight-through sum z + (v - z)
is not v (|z| more than twice |v|, or v more than twice |z|), and for non-dyadic value grids.

It follows the reference's formulas (vector-quantize-pytorch's LatentQuantize: per-dimension
argmin of |z - value|, codes = z + (value - z).detach(), indices = ((codes * 2 * half_width +
half_width) * basis).sum(-1).to(int32)), written here with plain torch ops, since the package
itself is not installable on these machines (no PyPI). Run with Debian's python3-torch:

    /usr/bin/python3 scripts/latent-straight-through.py
"""

import json
import pathlib

import torch

CASES = [[6, 7, 8], [4, 2, 5], [3, 6]]
OUT = pathlib.Path(__file__).resolve().parent.parent / 'packages/quantizers/test/fixtures/latent-straight-through.json'


def values(level):
    # odd levels: a two-sided linspace; even: arange(L) / L - 0.5 (zero in the middle, -0.5 first)
    return torch.linspace(-0.5, 0.5, level) if level % 2 == 1 else torch.arange(level) / level - 0.5


def case(levels, n):
    d = len(levels)
    gen = torch.Generator().manual_seed(sum(levels) * 31 + n)
    # wide inputs (|z| up to 1.8) so many codes come from values a factor of two or more away
    x = (torch.rand(1, d, n, generator=gen) * 3.6 - 1.8).to(torch.float32)
    z = x.permute(0, 2, 1)  # (b, n, d): the reference's "b d ... -> b ... d"
    vals = [values(level) for level in levels]
    idx = torch.stack([torch.argmin(torch.abs(z[..., i, None] - vals[i]), dim=-1) for i in range(d)], dim=-1)
    picked = torch.stack([vals[i][idx[..., i]] for i in range(d)], dim=-1)
    codes = z + (picked - z).detach()
    lv = torch.tensor(levels, dtype=torch.int32)
    half = lv // 2
    basis = torch.cumprod(torch.cat([torch.tensor([1], dtype=torch.int32), lv[:-1]]), dim=0)
    indices = ((codes * 2 * half + half) * basis).sum(dim=-1).to(torch.int32)
    on_grid = sum(1 for j, v in enumerate(codes.flatten().tolist()) if v in vals[j % d].tolist())
    return {
        'levels': levels,
        'x_shape': list(x.shape),
        'x': x.flatten().tolist(),
        'codes': codes.flatten().tolist(),
        'indices': indices.flatten().tolist(),
        'codes_off_grid': codes.numel() - on_grid,
    }


def main():
    cases = [case(levels, 96) for levels in CASES]
    doc = {
        'source': 'scripts/latent-straight-through.py: the reference LatentQuantize formulas in torch ' + torch.__version__ + ' (float32, cpu)',
        'values': {str(level): values(level).tolist() for level in range(2, 17)},
        'cases': cases,
    }
    OUT.write_text(json.dumps(doc) + '\n')
    print(OUT, [c['codes_off_grid'] for c in cases], 'codes off the grid')


main()
