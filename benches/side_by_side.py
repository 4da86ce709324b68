#!/usr/bin/env python3
"""Side-by-side benchmark of MC-dropout inference (issue 5, "Measuring").

In ONE process run, on the SAME weights (the model directory loaded with the reference's
`load_model_dir`), the SAME token lengths (those `emcoder bench` reports) and the SAME
thread count, this script times:

  1. `pytorch_f32`  - the PyTorch reference `mc_forward(..., mode="torch")` (torch RNG
                      dropout, f32): what users run today;
  2. `pytorch_bf16` - the same under `torch.autocast("cpu", dtype=torch.bfloat16)`;
  3. `ort_f32`      - ONNX Runtime (CPUExecutionProvider) on the reference exported to ONNX
                      with its dropouts kept (training-mode export, session created with
                      `disabled_optimizers=["EliminateDropout"]`), fed the sample-major
                      stacked batch (row s*B + b) in chunks of --max-batch rows like
                      `mc_forward`; the MC spread over samples is checked to be non-zero;
  4. `ort_int8`     - ONNX Runtime's dynamic int8 quantization (`quantize_dynamic`, QInt8
                      weights, per-tensor) of the same two exports;
  5. `emcoder_f32` / `emcoder_bf16` / `emcoder_int8` - `target/release/emcoder bench ...
                      --json` ("n/a" when the build lacks a precision).

Cases: a = N=50, one 16-token text; b = N=50, one 64-token text; c = N=50, a batch of 32
texts of mixed lengths 8..64 (torch/ORT pad; emcoder packs); d = one plain forward (dropout
off; emcoder `--samples 0`), one 16-token text; e, f, g = N=50, one text of 256, 1024 and
4096 tokens (long texts: PyTorch runs SDPA; at 4096 one iteration takes minutes, run it
alone with `--cases g --iters 1`). The default cases are a-d.

Run from anywhere with the reference venv's python, e.g.
    reference/.venv/bin/python benches/side_by_side.py --iters 10 --markdown
See benches/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from emcoder_ref.io import load_model_dir  # noqa: E402
from emcoder_ref.mc import mc_forward, statistics  # noqa: E402
from emcoder_ref.model import pad_batch  # noqa: E402

CLS, SEP = 50281, 50282
BUSY_CORES = 0.25  # other processes using more than this many cores = "under load"

CASES = {
    # name: (description, n_samples (0 = plain forward), tokens, batch, mixed)
    "a": ("N=50, one 16-token text", 50, 16, 1, False),
    "b": ("N=50, one 64-token text", 50, 64, 1, False),
    "c": ("N=50, 32 texts of mixed lengths 8..64", 50, 16, 32, True),
    "d": ("N=1 plain forward (dropout off), one 16-token text", 0, 16, 1, False),
    "e": ("N=50, one 256-token text", 50, 256, 1, False),
    "f": ("N=50, one 1024-token text", 50, 1024, 1, False),
    "g": ("N=50, one 4096-token text", 50, 4096, 1, False),
}

ENGINES = ["pytorch_f32", "pytorch_bf16", "ort_f32", "ort_int8", "emcoder_f32", "emcoder_bf16",
           "emcoder_int8"]
ENGINE_TITLES = {
    "pytorch_f32": "PyTorch f32 (reference)",
    "pytorch_bf16": "PyTorch bf16 autocast",
    "ort_f32": "ONNX Runtime f32",
    "ort_int8": "ONNX Runtime int8 (dynamic)",
    "emcoder_f32": "emcoder f32",
    "emcoder_bf16": "emcoder bf16",
    "emcoder_int8": "emcoder int8",
}
EMCODER = ("emcoder_f32", "emcoder_bf16", "emcoder_int8")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- inputs
def synthetic_ids(vocab: int, lengths) -> list[list[int]]:
    """The ids `emcoder bench` uses (cli/src/bench.rs `inputs`): [CLS] + ids + [SEP] with
    text b's i-th inner id = (b*7919 + i*104729) % min(50000, vocab). Timing does not
    depend on the ids; only the lengths have to match."""
    out = []
    for b, n in enumerate(lengths):
        n = max(int(n), 2)
        v = [min(CLS, vocab - 1)]
        v += [(b * 7919 + i * 104_729) % min(50_000, vocab) for i in range(n - 2)]
        v.append(min(SEP, vocab - 1))
        out.append(v)
    return out


def case_lengths(case: str) -> list[int]:
    _, _, tokens, batch, mixed = CASES[case]
    return [8 + (b * 37) % 57 if mixed else tokens for b in range(batch)]


# ---------------------------------------------------------------------------- timing
def quantiles(ms: list[float]) -> dict:
    """Same rule as `emcoder bench`: sorted, element round((n-1)*q)."""
    s = sorted(ms)
    q = lambda p: s[int(round((len(s) - 1) * p))]  # noqa: E731
    return {"median_ms": q(0.5), "p10_ms": q(0.1), "p90_ms": q(0.9), "iters": len(s),
            "all_ms": s}


def time_fn(fn, iters: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t) * 1e3)
    return quantiles(ms)


# ---------------------------------------------------------------------------- ONNX export
class _RMSNorm(nn.Module):
    """RMSNorm with explicit ops (the legacy exporter has no aten::rms_norm), sharing the
    reference module's weight."""

    def __init__(self, ref: nn.RMSNorm):
        super().__init__()
        self.weight = ref.weight
        self.eps = ref.eps if ref.eps is not None else torch.finfo(torch.float32).eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class ExportEmCoder(nn.Module):
    """The reference forward (mode "torch" when `dropout`, else "off") written with
    export-friendly ops on the reference model's own parameters: explicit RMSNorm,
    explicit masked softmax attention, interleaved RoPE with stack + reshape.
    (input_ids, attention_mask) int64 (R, T) -> logits (R, num_labels)."""

    def __init__(self, ref, dropout: bool):
        super().__init__()
        self.ref = ref
        self.cfg = ref.cfg
        self.dropout = dropout
        enc = ref.encoder
        self.embed_norm = _RMSNorm(enc.embed_norm)
        self.ln1 = nn.ModuleList([_RMSNorm(l.ln1) for l in enc.layers])
        self.ln2 = nn.ModuleList([_RMSNorm(l.ln2) for l in enc.layers])
        self.final_norm = _RMSNorm(enc.final_norm)

    def _drop(self, x, module):
        return F.dropout(x, p=module.p, training=True) if self.dropout else x

    @staticmethod
    def _rope(x, freqs, T):
        # x: (B, H, T, hd); interleaved pairs (2i, 2i+1) rotated by t * freqs[i]
        r = 2 * freqs.shape[0]
        hd = x.shape[-1]
        t = torch.arange(T, dtype=torch.float32)
        ang = t[:, None] * freqs[None, :]  # (T, r/2)
        cos, sin = ang.cos(), ang.sin()
        xr = x[..., :r]
        x0, x1 = xr[..., 0::2], xr[..., 1::2]  # (B, H, T, r/2)
        out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
        out = out.flatten(-2)  # (B, H, T, r)
        return out if r == hd else torch.cat([out, x[..., r:]], dim=-1)

    def forward(self, input_ids, attention_mask):
        cfg, ref = self.cfg, self.ref
        enc = ref.encoder
        B, T = input_ids.shape
        d, H = cfg.d_model, cfg.n_head
        hd = d // H
        keym = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        neg = torch.full((), -1e30, dtype=torch.float32)
        h = self.embed_norm(enc.token_embedding(input_ids))
        for l, layer in enumerate(enc.layers):
            at = layer.attn
            x = self.ln1[l](h)
            q = at.q_proj(x).view(B, T, H, hd).transpose(1, 2)
            k = at.k_proj(x).view(B, T, H, hd).transpose(1, 2)
            v = at.v_proj(x).view(B, T, H, hd).transpose(1, 2)
            fr = at.rotary_emb.freqs.float()
            q, k = self._rope(q, fr, T), self._rope(k, fr, T)
            s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / float(hd) ** 0.5)
            s = torch.where(keym, s, neg)
            a = torch.matmul(torch.softmax(s, dim=-1), v)  # (B, H, T, hd)
            a = at.out_proj(a.transpose(1, 2).reshape(B, T, d))
            h = h + self._drop(a, layer.drop1)
            f = layer.ffn(self.ln2[l](h))
            h = h + self._drop(f, layer.drop2)
        h = self.final_norm(h)
        m = attention_mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        c = ref.classifier
        z = c[1](c[0](pooled))
        z = self._drop(z, c[2])
        return c[3](z)


def export_onnx(model, path: str, dropout: bool) -> float:
    """Legacy (TorchScript) exporter, training mode, no constant folding. -> seconds."""
    t0 = time.perf_counter()
    wrapper = ExportEmCoder(model, dropout)
    ids, mask = pad_batch([[CLS, 5, 6, 7, SEP], [CLS, 8, SEP]])
    kw = dict(input_names=["input_ids", "attention_mask"], output_names=["logits"],
              dynamic_axes={"input_ids": {0: "rows", 1: "seq"},
                            "attention_mask": {0: "rows", 1: "seq"},
                            "logits": {0: "rows"}},
              opset_version=17, do_constant_folding=False, dynamo=False)
    if dropout:
        kw["training"] = torch.onnx.TrainingMode.TRAINING
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (ids, mask), path, **kw)
    model.eval()  # a TRAINING export flips modules to train mode; the reference stays eval
    return time.perf_counter() - t0


def ort_session(path: str, threads: int, keep_dropout: bool):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    kw = {"disabled_optimizers": ["EliminateDropout"]} if keep_dropout else {}
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"],
                                **kw)


def ort_quantize(src: str, dst: str) -> float:
    """ONNX Runtime's dynamic int8 quantization of an export (QInt8 weights). -> seconds."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    t = time.perf_counter()
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    return time.perf_counter() - t


def ort_dropout_nodes(path: str) -> int:
    import onnx
    m = onnx.load(path, load_external_data=False)
    return sum(1 for n in m.graph.node if n.op_type == "Dropout")


def ort_mc_forward(sess, ids: np.ndarray, mask: np.ndarray, n_samples: int,
                   max_batch: int) -> np.ndarray:
    """Like mc_forward: rows stacked sample-major (s*B + b), chunks of max_batch rows,
    padding columns no row of a chunk uses trimmed. -> (N, B, C)."""
    B = ids.shape[0]
    rows = n_samples * B
    out = []
    for start in range(0, rows, max_batch):
        b = np.arange(start, min(rows, start + max_batch)) % B
        i, m = ids[b], mask[b]
        T = int(m.sum(1).max())
        out.append(sess.run(None, {"input_ids": i[:, :T], "attention_mask": m[:, :T]})[0])
    return np.concatenate(out).reshape(n_samples, B, -1)


# ---------------------------------------------------------------------------- emcoder
def emcoder_bench(exe, model_dir, case, threads, iters, precision) -> dict:
    _, n, tokens, batch, mixed = CASES[case]
    cmd = [exe, "bench", "--model", model_dir, "--samples", str(n), "--tokens", str(tokens),
           "--batch", str(batch), "--threads", str(threads), "--precision", precision,
           "--iters", str(iters), "--json"]
    if mixed:
        cmd.append("--mixed")
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        msg = (p.stderr.strip() or p.stdout.strip()).splitlines()
        return {"error": msg[-1] if msg else f"exit {p.returncode}", "cmd": " ".join(cmd)}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["cmd"] = " ".join(cmd)
    return r


# ---------------------------------------------------------------------------- context
def machine_context(threads: int, exe: str) -> dict:
    cpu, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as f:
            txt = f.read()
        m = re.search(r"^model name\s*:\s*(.*)$", txt, re.M)
        cpu = m.group(1).strip() if m else cpu
        m = re.search(r"^flags\s*:\s*(.*)$", txt, re.M)
        fl = m.group(1).split() if m else []
        flags = [x for x in ("avx2", "fma", "avx_vnni", "avx512f", "avx512_bf16", "avx512_vnni",
                             "amx_bf16", "amx_int8", "amx_tile") if x in fl]
    except OSError:
        pass

    def git(*a):
        try:
            return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout.strip()
        except Exception:
            return ""

    import onnxruntime
    ctx = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu, "cpu_flags": flags, "logical_cpus": os.cpu_count(), "threads": threads,
        "commit": git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "emcoder_binary": exe,
        "emcoder_binary_mtime": datetime.datetime.fromtimestamp(
            os.path.getmtime(exe)).isoformat(timespec="seconds") if os.path.exists(exe) else None,
        "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
    }
    return ctx


def load_snapshot() -> dict:
    """Load average and the competing processes (reference/*.py scripts such as training
    or eval, cargo / rustc builds)."""
    try:
        la = os.getloadavg()
    except OSError:
        la = (float("nan"),) * 3
    busy = []
    try:
        ps = subprocess.run(["ps", "-eo", "pid,pcpu,args"], capture_output=True, text=True).stdout
        me = os.getpid()
        for line in ps.splitlines()[1:]:
            parts = line.split(None, 2)
            if len(parts) < 3 or int(parts[0]) == me:
                continue
            args = parts[2]
            exe = os.path.basename(args.split(" ")[0])
            if (re.search(r"reference/\w+\.py", args)  # train, eval, thresholds, ...
                    or exe in ("cargo", "rustc", "emcoder", "clippy-driver")):
                busy.append(f"{parts[0]} {parts[1]}% {args[:80]}")
    except Exception:
        pass
    return {"loadavg": [round(x, 2) for x in la], "competing": busy}


def cpu_sample():
    """(wall s, busy CPU s of the whole machine, CPU s of this process + waited children)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    except (OSError, ValueError):
        busy = float("nan")
    t = os.times()
    return time.perf_counter(), busy, t.user + t.system + t.children_user + t.children_system


def foreign_cores(a, b) -> float:
    """Average number of cores other processes kept busy between two cpu_sample()s."""
    wall = b[0] - a[0]
    return max(0.0, ((b[1] - a[1]) - (b[2] - a[2])) / wall) if wall > 0 else float("nan")


def measured(fn):
    """Runs fn() and attaches `foreign_cores` (CPU taken by others meanwhile) to its dict."""
    a = cpu_sample()
    r = fn()
    r["foreign_cores"] = round(foreign_cores(a, cpu_sample()), 3)
    return r


def torch_gemm_gflops(size: int = 2048, reps: int = 5) -> dict:
    """A second opinion on the machine's peak: GFLOP/s of one size^3 product in PyTorch
    (MKL / oneDNN) on the same threads, f32 and bf16 (median of reps)."""
    out = {}
    for name, dt in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size).to(dt), torch.randn(size, size).to(dt)
        a @ b
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t)
        out[name] = 2.0 * size ** 3 / sorted(ts)[len(ts) // 2] / 1e9
    return out


# ---------------------------------------------------------------------------- numbers check
def numbers_check(model, sess_mc, exe, model_dir, threads, max_batch) -> dict:
    """Mean probabilities over N=50 of one real text: emcoder predict (philox masks,
    seed 42) vs the reference with the same philox masks (should agree to rounding), and
    vs torch-RNG / ORT-RNG dropout (statistically: |diff| / SE of the difference)."""
    text = "I love this so much, thank you!"
    seed, N = 42, 50
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(REPO, "assets", "tokenizer.json"))
    ids_list = tok.encode(text).ids
    p = subprocess.run([exe, "predict", "--model", model_dir, "--json", "--samples", str(N),
                        "--seed", str(seed), "--threads", str(threads), text],
                       capture_output=True, text=True)
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-300:]}
    r = json.loads(p.stdout)["results"][0]
    emc = {x["label"]: x for x in r["labels"]}
    labels = [model.cfg.id2label[str(i)] for i in range(model.cfg.num_labels)]
    emc_mean = np.array([emc[l]["mean"] for l in labels])
    emc_std = np.array([emc[l]["std"] for l in labels])
    ids, mask = pad_batch([ids_list])
    out = {"text": text, "n_tokens_python": len(ids_list), "n_tokens_emcoder": r["n_tokens"],
           "n_samples": N}
    st_ph = statistics(mc_forward(model, ids, mask, N, max_batch, mode="philox", seed=seed))
    out["philox_max_abs_diff_mean"] = float(np.abs(st_ph["mean"][0] - emc_mean).max())
    torch.manual_seed(1)
    st_t = statistics(mc_forward(model, ids, mask, N, max_batch, mode="torch"))
    st_o = statistics(ort_mc_forward(sess_mc, ids.numpy(), mask.numpy(), N, max_batch))
    for name, st in (("torch_rng", st_t), ("ort_rng", st_o)):
        se = np.sqrt((st["std"][0] ** 2 + emc_std ** 2) / N)
        diff = st["mean"][0] - emc_mean
        out[f"{name}_max_abs_diff_mean"] = float(np.abs(diff).max())
        out[f"{name}_max_z"] = float(np.max(np.abs(diff) / np.maximum(se, 1e-12)))
    out["mean_std_emcoder"] = float(emc_std.mean())
    out["mean_std_torch_rng"] = float(st_t["std"][0].mean())
    out["mean_std_ort_rng"] = float(st_o["std"][0].mean())
    return out


# ---------------------------------------------------------------------------- report
def fmt_ms(r) -> str:
    if not r or "median_ms" not in r:
        return "n/a"
    mark = " (L)" if r.get("foreign_cores", 0.0) > BUSY_CORES else ""
    return f"{r['median_ms']:.1f} ({r['p10_ms']:.1f}-{r['p90_ms']:.1f}){mark}"


def ratio(num, den) -> str:
    if not num or not den or "median_ms" not in num or "median_ms" not in den:
        return "n/a"
    return f"{num['median_ms'] / den['median_ms']:.2f}x"


def render(res: dict) -> str:
    ctx, L = res["context"], []
    load = res["load_before"], res["load_after"]
    under_load = res["under_load"]
    L.append(f"### {ctx['date']} - commit {ctx['commit']}"
             f"{' (+ uncommitted changes)' if ctx['worktree_dirty'] else ''}"
             f"{' - MEASURED UNDER LOAD' if under_load else ''}")
    L.append("")
    L.append(f"- machine: {ctx['cpu']}, {ctx['logical_cpus']} logical CPUs "
             f"({', '.join(ctx['cpu_flags'])}); threads = {ctx['threads']} for every engine")
    L.append(f"- software: torch {ctx['torch']}, onnxruntime {ctx['onnxruntime']}, "
             f"python {ctx['python']}; emcoder binary built {ctx['emcoder_binary_mtime']}"
             + (f" (REBUILT during the run: {ctx['emcoder_binary_changed']})"
                if ctx.get("emcoder_binary_changed") else ""))
    g = ctx.get("torch_gemm_2048_gflops")
    if g:
        L.append(f"- PyTorch (MKL/oneDNN) 2048^3 GEMM on the same threads: f32 {g['f32']:.0f} "
                 f"GFLOP/s, bf16 {g['bf16']:.0f} GFLOP/s (compare emcoder's peak below)")
    L.append(f"- iterations: {res['args']['iters']} timed after 1 warm-up "
             f"(case c: {res['args']['iters_c']}); cells are median ms (p10-p90)")
    L.append(f"- load average before / after: {load[0]['loadavg']} / {load[1]['loadavg']}; "
             f"competing processes before: {len(load[0]['competing'])}, "
             f"after: {len(load[1]['competing'])}"
             + (" - numbers are noisy, not final" if under_load else ""))
    L.append(f"- other processes' CPU use while each engine ran: up to "
             f"{res.get('foreign_max', float('nan')):.2f} cores; cells marked (L) had more "
             f"than {BUSY_CORES} cores taken by others")
    L.append("")
    L.append("| case | " + " | ".join(ENGINE_TITLES[e] for e in ENGINES) + " |")
    L.append("|---|" + "---|" * len(ENGINES))
    for c, cr in res["cases"].items():
        L.append(f"| {c}: {CASES[c][0]} | " + " | ".join(fmt_ms(cr.get(e)) for e in ENGINES)
                 + " |")
    L.append("")
    L.append("Speed-up of emcoder (other engine's median / emcoder's median; > 1 = emcoder "
             "faster):")
    L.append("")
    L.append("| case | f32 vs PyTorch f32 | f32 vs PyTorch bf16 | f32 vs ORT | "
             "bf16 vs PyTorch f32 | bf16 vs PyTorch bf16 | bf16 vs ORT f32 |")
    L.append("|---|---|---|---|---|---|---|")
    for c, cr in res["cases"].items():
        cells = [ratio(cr.get(o), cr.get(e)) for e in ("emcoder_f32", "emcoder_bf16")
                 for o in ("pytorch_f32", "pytorch_bf16", "ort_f32")]
        L.append(f"| {c} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("emcoder int8 (other engine's median / emcoder int8's median):")
    L.append("")
    L.append("| case | vs emcoder f32 | vs emcoder bf16 | vs ORT int8 | vs ORT f32 | "
             "vs PyTorch f32 | vs PyTorch bf16 |")
    L.append("|---|---|---|---|---|---|---|")
    for c, cr in res["cases"].items():
        cells = [ratio(cr.get(o), cr.get("emcoder_int8"))
                 for o in ("emcoder_f32", "emcoder_bf16", "ort_int8", "ort_f32", "pytorch_f32",
                           "pytorch_bf16")]
        L.append(f"| {c} | " + " | ".join(cells) + " |")
    L.append("")
    L.append("emcoder's own counters (`emcoder bench --json`):")
    L.append("")
    L.append("| case | precision | GFLOP/s | peak GFLOP/s | fraction of peak | texts/s | "
             "max RSS MB | load ms |")
    L.append("|---|---|---|---|---|---|---|---|")
    for c, cr in res["cases"].items():
        for e in EMCODER:
            r = cr.get(e) or {}
            if "median_ms" in r:
                L.append(f"| {c} | {r.get('precision', e[-4:])} | {r['gflops']:.1f} | "
                         f"{r['peak_gflops']:.1f} | {r['fraction_of_peak']:.2f} | "
                         f"{r['texts_per_s']:.2f} | {r.get('max_rss_mb', float('nan')):.0f} | "
                         f"{r.get('load_ms', float('nan')):.0f} |")
            else:
                L.append(f"| {c} | {e[-4:]} | n/a ({r.get('error', 'not run')}) | | | | | |")
    L.append("")
    o = res.get("ort_checks", {})
    if o:
        L.append(f"ONNX Runtime dropout check: {o.get('dropout_nodes')} Dropout nodes in the "
                 f"graph; mean over labels of the std of the probabilities over N=50 samples "
                 f"(case a input): ORT {o.get('spread_ort', float('nan')):.4g}, PyTorch "
                 f"{o.get('spread_torch', float('nan')):.4g} -> dropout "
                 f"{'ON' if o.get('dropout_on') else 'OFF (!)'}; eval graph vs reference "
                 f"(dropout off) max |logit diff| {o.get('eval_max_abs_diff', float('nan')):.2e}; "
                 f"export {o.get('export_s', float('nan')):.1f} s"
                 + (f"; int8 quantization (quantize_dynamic, QInt8) {o['quantize_s']:.1f} s, "
                    f"its MC spread {o.get('spread_ort_int8', float('nan')):.4g}"
                    if "quantize_s" in o else "") + ".")
        L.append("")
    n = res.get("numbers")
    if n and "error" not in n:
        L.append(f"Numbers (N=50 mean probabilities, \"{n['text']}\", {n['n_tokens_emcoder']} "
                 f"tokens): emcoder predict vs reference with the same philox masks max |diff| "
                 f"{n['philox_max_abs_diff_mean']:.2e}; vs PyTorch RNG max |diff| "
                 f"{n['torch_rng_max_abs_diff_mean']:.3f} (max z {n['torch_rng_max_z']:.1f}); "
                 f"vs ORT RNG max |diff| {n['ort_rng_max_abs_diff_mean']:.3f} "
                 f"(max z {n['ort_rng_max_z']:.1f}).")
        L.append("")
    elif n:
        L.append(f"Numbers check failed: {n['error']}")
        L.append("")
    return "\n".join(L)


RESULTS_HEADER = """# Side-by-side results

Produced by `benches/side_by_side.py --markdown` (see benches/README.md): PyTorch reference
`mc_forward` (f32, and bf16 autocast), ONNX Runtime on the reference exported with its
dropouts kept, and `emcoder bench`, on the same weights (`bench-models/full-f32`, the
full-size random model of `emcoder make-model`), the same token lengths and the same thread
count, in one run. Newest sections last.
"""


# ---------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(REPO, "bench-models", "full-f32"))
    ap.add_argument("--emcoder", default=os.path.join(REPO, "target", "release", "emcoder"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10, help="timed iterations per case")
    ap.add_argument("--iters-c", type=int, default=None,
                    help="timed iterations for case c (default: --iters)")
    ap.add_argument("--cases", default="a,b,c,d")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--max-batch", type=int, default=64,
                    help="rows per chunk (mc_forward's max_batch_size; also ORT)")
    ap.add_argument("--no-numbers", action="store_true",
                    help="skip the mean-probability comparison")
    ap.add_argument("--out", help="write the full results as JSON")
    ap.add_argument("--markdown", action="store_true",
                    help="append a dated section to benches/RESULTS.md")
    args = ap.parse_args()
    args.iters_c = args.iters if args.iters_c is None else args.iters_c
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    for c in cases:
        if c not in CASES:
            ap.error(f"unknown case {c!r} ({', '.join(CASES)})")
    for e in engines:
        if e not in ENGINES:
            ap.error(f"unknown engine {e!r} ({', '.join(ENGINES)})")
    if not os.path.exists(args.emcoder):
        ap.error(f"{args.emcoder} not found: build it with `cargo build --release`")
    if not os.path.exists(os.path.join(args.model, "model.safetensors")):
        ap.error(f"{args.model}: no model.safetensors; write one with "
                 f"`target/release/emcoder make-model {args.model}`")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass

    res = {"args": vars(args), "context": machine_context(args.threads, args.emcoder),
           "load_before": load_snapshot(), "cases": {}}
    log(f"[context] {res['context']['cpu']}, threads {args.threads}, commit "
        f"{res['context']['commit']}, load {res['load_before']['loadavg']}, "
        f"competing {len(res['load_before']['competing'])}")

    res["context"]["torch_gemm_2048_gflops"] = g = torch_gemm_gflops()
    log(f"[context] PyTorch 2048^3 GEMM: f32 {g['f32']:.0f}, bf16 {g['bf16']:.0f} GFLOP/s")
    t0 = time.perf_counter()
    model, cfg, _ = load_model_dir(args.model)
    log(f"[load] reference model {time.perf_counter() - t0:.1f} s "
        f"(d {cfg.d_model}, {cfg.n_layers} layers, vocab {cfg.vocab_size})")

    tmp = tempfile.TemporaryDirectory(prefix="emcoder-sbs-")
    sess_mc = sess_eval = None
    if "ort_f32" in engines or "ort_int8" in engines or not args.no_numbers:
        mc_path = os.path.join(tmp.name, "emcoder_mc.onnx")
        ev_path = os.path.join(tmp.name, "emcoder_eval.onnx")
        es = export_onnx(model, mc_path, dropout=True)
        es += export_onnx(model, ev_path, dropout=False)
        sess_mc = ort_session(mc_path, args.threads, keep_dropout=True)
        sess_eval = ort_session(ev_path, args.threads, keep_dropout=False)
        if "ort_int8" in engines:
            mc8, ev8 = mc_path.replace(".onnx", "_int8.onnx"), ev_path.replace(".onnx", "_int8.onnx")
            qs = ort_quantize(mc_path, mc8) + ort_quantize(ev_path, ev8)
            sess_mc8 = ort_session(mc8, args.threads, keep_dropout=True)
            sess_eval8 = ort_session(ev8, args.threads, keep_dropout=False)
        # checks: the eval graph reproduces the reference; the MC graph really drops out
        ids, mask = pad_batch(synthetic_ids(cfg.vocab_size, [16, 9]))
        with torch.no_grad():
            ref = model(ids, mask, mode="off").numpy()
        got = sess_eval.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
        ids1, mask1 = pad_batch(synthetic_ids(cfg.vocab_size, case_lengths("a")))
        o = statistics(ort_mc_forward(sess_mc, ids1.numpy(), mask1.numpy(), 50,
                                      args.max_batch))
        torch.manual_seed(0)
        t = statistics(mc_forward(model, ids1, mask1, 50, args.max_batch, mode="torch"))
        spread_o, spread_t = float(o["std"].mean()), float(t["std"].mean())
        res["ort_checks"] = {
            "dropout_nodes": ort_dropout_nodes(mc_path), "export_s": es,
            "eval_max_abs_diff": float(np.abs(ref - got).max()),
            "spread_ort": spread_o, "spread_torch": spread_t,
            "dropout_on": bool(spread_o > 0.1 * spread_t and spread_o > 0),
        }
        if "ort_int8" in engines:
            o8 = statistics(ort_mc_forward(sess_mc8, ids1.numpy(), mask1.numpy(), 50,
                                           args.max_batch))
            res["ort_checks"]["quantize_s"] = qs
            res["ort_checks"]["spread_ort_int8"] = float(o8["std"].mean())
        log(f"[ort] {res['ort_checks']}")
        if not res["ort_checks"]["dropout_on"]:
            log("[ort] WARNING: the MC spread of ONNX Runtime is (near) zero: dropout was "
                "removed; its timings are not MC inference")

    for c in cases:
        desc, n, _, _, _ = CASES[c]
        iters = args.iters_c if c == "c" else args.iters
        cr = res["cases"][c] = {"description": desc}
        log(f"[case {c}] {desc}, {iters} iters")
        lengths = case_lengths(c)
        if "emcoder_f32" in engines:
            r = cr["emcoder_f32"] = measured(lambda: emcoder_bench(
                args.emcoder, args.model, c, args.threads, iters, "f32"))
            log(f"  emcoder_f32  {fmt_ms(r)} {r.get('error', '')} [others: "
                f"{r['foreign_cores']:.2f} cores]")
            if "tokens" in r and list(r["tokens"]) != lengths:
                log(f"  note: emcoder used lengths {r['tokens']}; using those")
                lengths = list(r["tokens"])
        cr["tokens"] = lengths
        ids, mask = pad_batch(synthetic_ids(cfg.vocab_size, lengths))
        ids_np, mask_np = ids.numpy(), mask.numpy()

        if n == 0:  # plain forward, dropout off
            def pt():
                with torch.no_grad():
                    model(ids, mask, mode="off")
            ort_fn = lambda: sess_eval.run(  # noqa: E731
                None, {"input_ids": ids_np, "attention_mask": mask_np})
            ort8_fn = lambda: sess_eval8.run(  # noqa: E731
                None, {"input_ids": ids_np, "attention_mask": mask_np})
        else:
            def pt():
                mc_forward(model, ids, mask, n, args.max_batch, mode="torch")
            ort_fn = lambda: ort_mc_forward(sess_mc, ids_np, mask_np, n,  # noqa: E731
                                            args.max_batch)
            ort8_fn = lambda: ort_mc_forward(sess_mc8, ids_np, mask_np, n,  # noqa: E731
                                             args.max_batch)

        def pt_bf16():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                pt()

        for e, fn in (("pytorch_f32", pt), ("pytorch_bf16", pt_bf16), ("ort_f32", ort_fn),
                      ("ort_int8", ort8_fn)):
            if e in engines:
                cr[e] = measured(lambda: time_fn(fn, iters))
                log(f"  {e:12s} {fmt_ms(cr[e])} [others: {cr[e]['foreign_cores']:.2f} cores]")
        for e in ("emcoder_bf16", "emcoder_int8"):
            if e in engines:
                r = cr[e] = measured(lambda: emcoder_bench(
                    args.emcoder, args.model, c, args.threads, iters, e[len("emcoder_"):]))
                log(f"  {e} {fmt_ms(r)} {r.get('error', '')} [others: "
                    f"{r['foreign_cores']:.2f} cores]")

    if not args.no_numbers:
        log("[numbers] emcoder predict vs reference, N=50")
        try:
            res["numbers"] = numbers_check(model, sess_mc, args.emcoder, args.model,
                                           args.threads, args.max_batch)
        except Exception as ex:  # optional: never lose the timings for it
            res["numbers"] = {"error": f"{type(ex).__name__}: {ex}"}
        log(f"  {res['numbers']}")

    res["load_after"] = load_snapshot()
    mtime = datetime.datetime.fromtimestamp(os.path.getmtime(args.emcoder)).isoformat(
        timespec="seconds") if os.path.exists(args.emcoder) else None
    if mtime != res["context"]["emcoder_binary_mtime"]:
        res["context"]["emcoder_binary_changed"] = mtime
        log(f"[context] WARNING: {args.emcoder} was rebuilt during the run ({mtime})")
    res["foreign_max"] = max([r.get("foreign_cores", 0.0) for cr in res["cases"].values()
                              for r in cr.values() if isinstance(r, dict)] or [0.0])
    res["under_load"] = bool(res["load_before"]["competing"] or res["load_after"]["competing"]
                             or res["foreign_max"] > BUSY_CORES)
    res["total_s"] = time.perf_counter() - t0
    table = render(res)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    if args.markdown:
        path = os.path.join(REPO, "benches", "RESULTS.md")
        new = not os.path.exists(path)
        with open(path, "a") as f:
            if new:
                f.write(RESULTS_HEADER)
            f.write("\n" + table + "\n")
        log(f"[markdown] appended to {path}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
