#!/usr/bin/env python3
"""The PyTorch reference on a GPU, for `scripts/gpu-check.sh` (issue 17's targets).

Times, on the same GPU and the same model directory as `emcoder bench --device cuda`:
  - `pytorch_bf16`: MC dropout (torch RNG, `mode="torch"`, what users run) under
    `torch.autocast("cuda", dtype=torch.bfloat16)`, eager, for the cases below;
  - `pytorch_f32`: the same without autocast (TF32 off);
  - `matmul_bf16_tflops`: the card's measured bf16 matrix rate (a large torch.matmul), the
    yardstick for the share of peak that emcoder's products reach.
Cases (the lengths of `emcoder bench`): `batch256`: 256 texts of lengths 8 + (b*37) % 57
(8..64), N=50; `one16`: one 16-token text, N=50.

Needs only torch (and numpy, which the reference model imports); reads safetensors itself.
Prints one JSON object. Run: python3 benches/gpu_reference.py --model DIR [--iters 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics as stats
import struct
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "reference"))

from emcoder_ref.mc import mc_forward  # noqa: E402
from emcoder_ref.model import EmCoder, EmCoderConfig, pad_batch  # noqa: E402

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def read_safetensors(path: str) -> dict:
    """name -> f32 tensor (the safetensors layout: u64 header length, JSON header, data)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = bytearray(data[base + a:base + b])
        x = torch.frombuffer(buf, dtype=DTYPES[t["dtype"]]).reshape(t["shape"])
        out[name] = x.float()
    return out


def load(model_dir: str) -> EmCoder:
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = EmCoderConfig.from_dict(json.load(f))
    sd = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    freqs = sd["encoder.layers.0.attn.rotary_emb.freqs"]
    if 2 * freqs.shape[0] != cfg.rotary_dim:
        cfg.rot_dim = 2 * freqs.shape[0]
    model = EmCoder(cfg, bias="encoder.layers.0.attn.q_proj.bias" in sd)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def inputs(batch: int, tokens: int, mixed: bool, vocab: int):
    """The token ids of `emcoder bench` (cli/src/bench.rs, `inputs`)."""
    seqs = []
    for b in range(batch):
        n = max(8 + (b * 37) % 57 if mixed else tokens, 2)
        ids = [min(50281, vocab - 1)]
        ids += [(b * 7919 + i * 104729) % min(50000, vocab) for i in range(n - 2)]
        ids.append(min(50282, vocab - 1))
        seqs.append(ids)
    return seqs


def time_case(model, seqs, n, iters, bf16, max_batch):
    ids, am = pad_batch(seqs)
    ids, am = ids.cuda(), am.cuda()

    def once():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            z = mc_forward(model, ids, am, n, max_batch_size=max_batch, mode="torch")
        torch.cuda.synchronize()
        return z

    once()  # warm-up
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        once()
        times.append((time.perf_counter() - t) * 1e3)
    med = stats.median(times)
    return {"median_ms": med, "texts_per_s": len(seqs) / (med / 1e3), "iters": iters}


def matmul_tflops(size=8192, iters=20):
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * size**3 / stats.median(times) / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--max-batch", type=int, default=2048,
                    help="rows per chunk of mc_forward (sample-major stacking)")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = load(a.model).cuda()
    vocab = model.cfg.vocab_size
    out = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "matmul_bf16_tflops": matmul_tflops(),
        "max_batch": a.max_batch,
    }
    cases = {"batch256": inputs(256, 16, True, vocab), "one16": inputs(1, 16, False, vocab)}
    for name, seqs in cases.items():
        for prec, bf16 in (("bf16", True), ("f32", False)):
            iters = a.iters if name == "batch256" else 10 * a.iters
            out[f"pytorch_{prec}_{name}"] = time_case(model, seqs, 50, iters, bf16, a.max_batch)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
