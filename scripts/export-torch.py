#!/usr/bin/env python3
"""Save a vector-quantize-pytorch module's state_dict as safetensors that Tessera loads in one call.

    python3 scripts/export-torch.py ResidualVQ '{"dim": 8, "num_quantizers": 3, "codebook_size": 16}' rvq.safetensors
    python3 scripts/export-torch.py FSQ '{"levels": [8, 5, 5, 5], "dim": 8}' fsq.safetensors --dtype float16

The module is built as `vector_quantize_pytorch.<Class>(**kwargs)` (after `torch.manual_seed(seed)`),
optionally given `--load weights.pt` (a state_dict saved with torch.save) and `--warmup N` training
forwards on random batches (so EMA statistics and k-means init are not at their defaults); `--sample
out.json` also records eval outputs on a seeded input, to check a loader against. The file's
`__metadata__` holds the constructor:

    {"tessera.class": "<Class>", "tessera.kwargs": "<kwargs as JSON>", "tessera.source": "vector-quantize-pytorch <version>"}

so `fromSafetensors(bytes)` in @tessera/quantizers builds the same quantizer and loads the state.
Tensors are written as torch holds them (any float dtype, int64, bool) under their state_dict names,
shared codebooks included once per layer as torch lists them. The safetensors format is written by
hand (an 8-byte little-endian header length, a JSON header, the raw little-endian bytes), so the
`safetensors` package is not needed and shared storage needs no special case.
"""

import argparse
import json
import struct
import sys

# torch dtype name -> safetensors dtype string
DTYPES = {
    'float32': 'F32', 'float16': 'F16', 'bfloat16': 'BF16', 'float64': 'F64',
    'int64': 'I64', 'int32': 'I32', 'int16': 'I16', 'int8': 'I8', 'uint8': 'U8', 'bool': 'BOOL',
}


def write_safetensors(path, tensors, metadata):
    """tensors: {name: (dtype string, shape list, raw little-endian bytes)}; metadata: {str: str}."""
    header = {'__metadata__': metadata}
    offset = 0
    for name in sorted(tensors):
        dtype, shape, raw = tensors[name]
        header[name] = {'dtype': dtype, 'shape': list(shape), 'data_offsets': [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(',', ':'))
    # pad with spaces so the data starts 8-byte aligned, as the reference writer does
    text += ' ' * ((8 - (8 + len(text.encode('utf-8'))) % 8) % 8)
    encoded = text.encode('utf-8')
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(encoded)))
        f.write(encoded)
        for name in sorted(tensors):
            f.write(tensors[name][2])


def tensor_entry(t):
    """A torch tensor -> (safetensors dtype, shape, little-endian bytes)."""
    import torch
    name = str(t.dtype).replace('torch.', '')
    if name not in DTYPES:
        raise SystemExit(f'export-torch: dtype {t.dtype} has no safetensors name here')
    flat = t.detach().cpu().contiguous().reshape(-1)
    # viewing the elements as bytes works for every dtype (numpy has no bfloat16)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() > 0 else b''
    return DTYPES[name], list(t.shape), raw


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('cls', help='class name in vector_quantize_pytorch (VectorQuantize, ResidualVQ, FSQ, LFQ, SimVQ, ...)')
    p.add_argument('kwargs', help='constructor keyword arguments as a JSON object')
    p.add_argument('out', help='the .safetensors file to write')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--load', help='a torch.save()d state_dict to load into the module first')
    p.add_argument('--warmup', type=int, default=0, help='training forwards on random batches before saving')
    p.add_argument('--dtype', choices=['float32', 'float16', 'bfloat16', 'float64'], help='cast floating tensors before saving')
    p.add_argument('--sample', help='also write the eval outputs on a seeded (2, 10, dim) input to this JSON file, to check a loader against')
    a = p.parse_args()
    if sys.byteorder != 'little':
        raise SystemExit('export-torch: writes the host byte order; safetensors is little-endian')

    import torch
    import vector_quantize_pytorch as vqp

    kwargs = json.loads(a.kwargs)
    if not isinstance(kwargs, dict):
        raise SystemExit('export-torch: kwargs must be a JSON object')
    torch.manual_seed(a.seed)
    module = getattr(vqp, a.cls)(**kwargs)
    if a.load:
        module.load_state_dict(torch.load(a.load, map_location='cpu'))
    if a.warmup:
        module.train()
        with torch.no_grad():
            for _ in range(a.warmup):
                module(torch.randn(2, 16, input_dim(kwargs)))
    module.eval()

    tensors = {}
    for name, t in module.state_dict().items():
        if a.dtype and t.is_floating_point():
            t = t.to(getattr(torch, a.dtype))
        tensors[name] = tensor_entry(t)
    version = getattr(vqp, '__version__', None)
    if version is None:
        try:
            from importlib.metadata import version as pkg_version
            version = pkg_version('vector-quantize-pytorch')
        except Exception:
            version = 'unknown'
    metadata = {
        'tessera.class': a.cls,
        'tessera.kwargs': json.dumps(kwargs, separators=(',', ':')),
        'tessera.source': f'vector-quantize-pytorch {version}',
    }
    write_safetensors(a.out, tensors, metadata)
    print(f'wrote {a.out}: {a.cls}, {len(tensors)} tensors')
    if a.sample:
        write_sample(a.sample, module, a.dtype, input_dim(kwargs))
        print(f'wrote {a.sample}')


def write_sample(path, module, dtype, dim):
    """Eval outputs on a seeded input, computed with the values the file holds (cast, then widened)."""
    import torch
    if dtype:
        cast = {k: v.to(getattr(torch, dtype)).float() if v.is_floating_point() else v for k, v in module.state_dict().items()}
        module.load_state_dict(cast)
    x = torch.randn(2, 10, dim, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        out = module(x)
    quantized, indices = out[0], out[1]
    if isinstance(indices, (tuple, list)):
        indices = torch.stack(list(indices))
    sample = {
        'x': {'shape': list(x.shape), 'data': x.flatten().tolist()},
        'quantized': {'shape': list(quantized.shape), 'data': quantized.flatten().tolist()},
        'indices': {'shape': list(indices.shape), 'data': indices.flatten().tolist()},
    }
    with open(path, 'w') as f:
        json.dump(sample, f)


def input_dim(kwargs):
    """The feature size of a (batch, seq, dim) input: `dim`, else the number of levels or code bits."""
    if kwargs.get('dim') is not None:
        return kwargs['dim']
    if kwargs.get('levels') is not None:
        return len(kwargs['levels'])
    return max(1, int(kwargs['codebook_size']).bit_length() - 1)


if __name__ == '__main__':
    main()
