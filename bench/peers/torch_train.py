"""The TRAIN workload on PyTorch (CPU): the demo's VQ-VAE training step, the optional peer of
bench/src/train-torch.ts, which runs this script and reads what it writes.

argv: <inputs .safetensors> <result .json> <threads: a count, or "default"> <max seconds>

The inputs file holds Tessera's initial parameters (torch's (out, in) layout), the batch and, in
its metadata, the shape, Adam's settings and FSQ's float32 constants, so that every peer starts
from the same weights. The script times steps the way the node harness does (warm-up, then the
median of at least 5 timed steps, up to 30 within 2 s) and, from the initial weights again,
records the first steps for the agreement check (bench/src/train-check.ts).
"""
import base64
import json
import struct
import sys
import time

# the load time reported beside the first call: `import torch` is this peer's module load
_IMPORT_START = time.perf_counter()
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

IMPORT_MS = (time.perf_counter() - _IMPORT_START) * 1000


def rss_mb():
    """(VmRSS, VmHWM) of this process in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {info['dtype']}, expected F32")
        begin, end = info["data_offsets"]
        buf = bytearray(data[base + begin : base + end])
        tensors[name] = torch.frombuffer(buf, dtype=torch.float32).reshape(info["shape"])
    return tensors, meta


class VqVae(torch.nn.Module):
    """Encoder MLP, FSQ with straight-through rounding, decoder MLP with a linear output."""

    def __init__(self, params, spec):
        super().__init__()
        self.layers = torch.nn.ModuleDict()
        for name in ("encoder.0", "encoder.1", "decoder.0", "decoder.1"):
            w = params[f"{name}.weight"]
            lin = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(params[f"{name}.bias"])
            self.layers[name.replace(".", "_")] = lin
        c = spec["fsq"]
        f32 = lambda v: torch.tensor(v, dtype=torch.float32)
        self.shift, self.half_l, self.offset = f32(c["shift"]), f32(c["halfL"]), f32(c["offset"])
        self.half_width, self.basis = f32(c["halfWidth"]), f32(c["basis"])
        self.tokens, self.token_dim = spec["tokens"], spec["tokenDim"]

    def forward(self, x):
        L = self.layers
        b = x.shape[0]
        z = L["encoder_1"](F.relu(L["encoder_0"](x))).reshape(b, self.tokens, self.token_dim)
        bounded = torch.tanh(z + self.shift) * self.half_l - self.offset
        # the reference's round_ste: the rounded value forward, the identity gradient backward
        rounded = bounded + (bounded.round() - bounded).detach()
        codes = rounded / self.half_width
        with torch.no_grad():
            indices = ((codes * self.half_width + self.half_width) * self.basis).sum(-1).round().to(torch.int32)
        recon = L["decoder_1"](F.relu(L["decoder_0"](codes.reshape(b, -1))))
        return recon, indices


def build(params, spec):
    model = VqVae(params, spec)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], betas=(spec["beta1"], spec["beta2"]), eps=spec["eps"])
    return model, opt


def step(model, opt, x):
    opt.zero_grad(set_to_none=True)
    recon, indices = model(x)
    loss = F.mse_loss(recon, x)
    loss.backward()
    opt.step()
    return loss.item(), indices


def main():
    inputs, result_path, threads_arg, max_seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    default_threads = torch.get_num_threads()
    if threads_arg != "default":
        torch.set_num_threads(int(threads_arg))
    rss_base, _ = rss_mb()
    params, meta = load_safetensors(inputs)
    spec = json.loads(meta["spec"])
    x = params.pop("images")

    t0 = time.perf_counter()
    model, opt = build(params, spec)
    setup_ms = (time.perf_counter() - t0) * 1000
    t1 = time.perf_counter()
    step(model, opt, x)
    first_ms = (time.perf_counter() - t1) * 1000
    _, peak_first = rss_mb()

    # warm-up, then timed steps (each a real step: parameters and Adam state carried)
    warm_start = time.perf_counter()
    for _ in range(4):
        if time.perf_counter() - warm_start > min(1.0, max_seconds / 10):
            break
        step(model, opt, x)
    times = []
    start = time.perf_counter()
    while len(times) < 30:
        s = time.perf_counter()
        step(model, opt, x)
        times.append((time.perf_counter() - s) * 1000)
        if len(times) >= 5 and time.perf_counter() - start > min(2.0, max_seconds):
            break
    _, peak = rss_mb()
    times.sort()

    # the first steps from the initial parameters, for the agreement check
    model, opt = build(params, spec)
    w0 = model.layers["encoder_0"].weight.detach().clone()
    losses, first_indices, delta = [], None, None
    for t in range(spec["traceSteps"]):
        loss, indices = step(model, opt, x)
        losses.append(loss)
        if t == 0:
            first_indices = indices.flatten().tolist()
            d = (model.layers["encoder_0"].weight.detach() - w0).flatten().tolist()
            delta = base64.b64encode(struct.pack(f"<{len(d)}f", *d)).decode()

    result = {
        "medianMs": times[len(times) // 2],
        "minMs": times[0],
        "runs": len(times),
        "loadMs": IMPORT_MS,
        "setupMs": setup_ms,
        "firstRunMs": first_ms,
        "rssBaseMB": rss_base,
        "rssPeakMB": max(peak_first, peak),
        "config": (
            f"PyTorch {torch.__version__} CPU, eager; {'torch.set_num_threads(' + threads_arg + ')' if threads_arg != 'default' else 'threads left to torch'}: {torch.get_num_threads()} "
            f"thread{'s' if torch.get_num_threads() != 1 else ''} "
            f"(its default here: {default_threads}), interop threads {torch.get_num_interop_threads()}; "
            "nn.Linear layers, F.mse_loss, loss.backward(), torch.optim.Adam (its default single-tensor CPU path); "
            "FSQ rounding as the reference's round_ste (z + (round(z) - z).detach())"
        ),
        "trace": {"losses": losses, "indices": first_indices, "encoderDelta": delta},
    }
    with open(result_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
