"""Writes the golden test fixtures under tests/fixtures/<name>/ (deterministic).

Each fixture: a model directory (model.safetensors, config.json, maybe thresholds.json)
plus golden.safetensors (hidden states, logits, seeded philox MC, torch-RNG MC
statistics) and golden.json (texts, token ids, notes).

  reference/.venv/bin/python reference/make_fixtures.py [--only NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emcoder_ref.data import REPO, encode, load_tokenizer  # noqa: E402
from emcoder_ref.io import DTYPES, save_model_dir  # noqa: E402
from emcoder_ref.mc import mc_forward, statistics  # noqa: E402
from emcoder_ref.model import LABELS, EmCoder, EmCoderConfig, default_freqs, pad_batch  # noqa

OUT = os.path.join(REPO, "tests", "fixtures")
MC_SEED, MC_N = 1234, 8
TORCH_SEED, TORCH_N = 4321, 4000
GRID = np.linspace(0.1, 0.9, 15)
TEXTS = ["I am so happy you are here!", "", "Thank you so much for the help!",
         "This is hilarious 😂😂 I can't stop laughing 🤣",
         "[NAME] really let me down, I'm so disappointed and angry with him.",
         "Honestly I wasn't sure what to expect when I walked in, but the whole evening "
         "turned out to be wonderful, and I am grateful to everyone who made it happen."]


def randomize_(model: EmCoder, g: torch.Generator):
    """Random weights with a non-trivial scale so outputs spread and bugs show."""
    for name, p in model.named_parameters():
        if name.endswith("freqs"):
            continue
        if "token_embedding" in name:
            p.data = torch.randn(p.shape, generator=g)
        elif "norm" in name or ".ln" in name:
            p.data = 1.0 + 0.2 * torch.randn(p.shape, generator=g)
        elif name.startswith("classifier") and name.endswith("bias"):
            p.data = 0.5 * torch.randn(p.shape, generator=g)
        elif name.endswith("bias"):
            p.data = 0.1 * torch.randn(p.shape, generator=g)
        else:
            std = 0.3 if name.startswith("classifier") else 0.25
            p.data = std * torch.randn(p.shape, generator=g)


def round_to_(model: EmCoder, dtype: str):
    """Rounds every parameter to the stored dtype and back to f32 (what the engine sees)."""
    for p in model.parameters():
        p.data = p.data.to(DTYPES[dtype]).float()


def token_inputs(vocab: int, g: torch.Generator):
    """3 texts of lengths 2, 7, 13 as [CLS]=1 ... [SEP]=2 with random ids in [3, vocab)."""
    seqs = []
    for n in (2, 7, 13):
        mid = torch.randint(3, vocab, (n - 2,), generator=g).tolist()
        seqs.append([1] + mid + [2])
    return seqs


def make_thresholds(g: torch.Generator, with_u: bool):
    out = {}
    for c, name in enumerate(LABELS):
        p = float(GRID[int(torch.randint(3, 12, (1,), generator=g))])
        out[name] = {"p": p, "f1": round(float(torch.rand(1, generator=g)), 4)}
        if with_u:
            out[name]["u"] = round(0.02 + 0.15 * float(torch.rand(1, generator=g)), 4)
    return out


def goldens(model: EmCoder, seqs, thresholds) -> tuple[dict, dict]:
    """-> (golden tensors, metadata). Hidden states are stored for the real tokens only,
    texts concatenated: (total_tokens, d)."""
    ids, am = pad_batch(seqs)  # (B, T)
    keep = am.bool()
    t = {"input_ids": torch.tensor([i for s in seqs for i in s], dtype=torch.int64),
         "lengths": torch.tensor([len(s) for s in seqs], dtype=torch.int64)}
    with torch.no_grad():
        dbg = model.forward_debug(ids, am, mode="off")
    t["hidden.embed"] = dbg["embed"][keep]
    for l, h in enumerate(dbg["layers"]):
        t[f"hidden.{l}"] = h[keep]
    t["hidden.final"] = dbg["final"][keep]
    t["pooled"] = dbg["pooled"]
    t["logits"] = dbg["logits"]
    # seeded philox MC, N=8, seed 1234, all texts in one batch
    z = mc_forward(model, ids, am, MC_N, max_batch_size=64, mode="philox", seed=MC_SEED)
    st = statistics(z, thresholds)
    t["mc.logits"] = z
    for k in ("mean", "std", "total_entropy", "aleatoric", "epistemic"):
        t[f"mc.{k}"] = torch.from_numpy(st[k]).float()
    t["mc.predicted"] = torch.from_numpy(st["predicted"].astype(np.uint8))
    # torch's own RNG: mean and standard error of the probabilities over 4000 samples
    torch.manual_seed(TORCH_SEED)
    zt = mc_forward(model, ids, am, TORCH_N, max_batch_size=2048, mode="torch")
    pt = torch.sigmoid(zt.double())
    t["torch_mc.mean"] = pt.mean(0).float()
    t["torch_mc.sem"] = (pt.std(0) / TORCH_N ** 0.5).float()
    t = {k: v.contiguous() for k, v in t.items()}
    meta = {"mc.seed": str(MC_SEED), "mc.n_samples": str(MC_N), "mc.mode": "philox",
            "torch_mc.n": str(TORCH_N), "torch_mc.seed": str(TORCH_SEED),
            "dropout": str(model.cfg.dropout)}
    return t, meta


def stable_header(path: str):
    """save_file orders __metadata__ keys at random; rewrite the header (same length)
    with sorted metadata keys so that regenerating gives identical bytes."""
    with open(path, "r+b") as f:
        n = int.from_bytes(f.read(8), "little")
        h = json.loads(f.read(n))
        h["__metadata__"] = dict(sorted(h["__metadata__"].items()))
        new = json.dumps(h, separators=(",", ":")).encode()
        assert len(new) <= n
        f.seek(8)
        f.write(new + b" " * (n - len(new)))


def write_fixture(name, model, cfg, seqs, thresholds, dtype, variant, family, notes,
                  texts=None):
    d = os.path.join(OUT, name)
    save_model_dir(model, cfg, d, dtype=dtype, variant=variant, thresholds=thresholds,
                   config_family=family)
    round_to_(model, dtype)
    model.eval()
    t, meta = goldens(model, seqs, thresholds)
    save_file(t, os.path.join(d, "golden.safetensors"), metadata=meta)
    stable_header(os.path.join(d, "golden.safetensors"))
    info = {"fixture": name, "variant": variant, "dtype": dtype, "config_family": family,
            "notes": notes, "token_ids": seqs, **meta}
    if texts is not None:
        info["texts"] = texts
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(info, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"{name}: logits[0,:4]={t['logits'][0, :4].tolist()} "
          f"predicted={int(t['mc.predicted'].sum())}/{t['mc.predicted'].numel()}")


def build(cfg, bias, seed):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = EmCoder(cfg, bias=bias)
    randomize_(model, g)
    return model, g


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    small = dict(vocab_size=512, d_model=32, n_head=4, n_layers=2, d_ffn=88, dropout=0.1)
    jobs = []

    def tiny_f32():
        cfg = EmCoderConfig(**small)
        model, g = build(cfg, False, 1)
        for l, layer in enumerate(model.encoder.layers):  # per-layer freqs that differ
            layer.attn.rotary_emb.freqs.data = default_freqs(8, 10000.0) * (1.0 + 0.25 * l)
        write_fixture("tiny-f32", model, cfg, token_inputs(512, g), make_thresholds(g, False),
                      "f32", "canonical", "canonical",
                      "canonical F32; rot_dim = head_dim = 8; each layer stores its own freqs "
                      "(layer l = default * (1 + 0.25 l)), so the stored tensors must be used")
    jobs.append(("tiny-f32", tiny_f32))

    def tiny_rot_partial():
        cfg = EmCoderConfig(**small, rot_dim=4, norm_eps=1e-5)
        model, g = build(cfg, False, 2)
        shared = default_freqs(4, 500.0)  # NOT the config's rope_theta: use the stored tensor
        for layer in model.encoder.layers:
            layer.attn.rotary_emb.freqs.data = shared.clone()
        write_fixture("tiny-rot-partial", model, cfg, token_inputs(512, g),
                      make_thresholds(g, True), "f32", "alt", "hf",
                      "alt names (model.*, wq/wk/wv/wo, norm1/norm2, w1/w3/w2, pre_classifier/"
                      "classifier), HF config keys, rms_norm_eps 1e-5; one shared "
                      "model.rotary_emb.freqs of length 2 (rot_dim 4 < head_dim 8) built with "
                      "theta 500 while config rope_theta is 10000; thresholds carry u")
    jobs.append(("tiny-rot-partial", tiny_rot_partial))

    def tiny_fused_bias():
        cfg = EmCoderConfig(**small, rope_theta=10000.0, norm_eps=1e-6)
        model, g = build(cfg, True, 3)
        write_fixture("tiny-fused-bias", model, cfg, token_inputs(512, g), None, "f32",
                      "fused", "canonical",
                      "fused Wqkv (3d,d) q,k,v rows, Wo, w12 (2f,d) gate rows then up, w2, "
                      "biases on every linear, classifier.dense/out_proj; no freqs tensor: "
                      "derive freqs from rope_theta 10000 and head_dim 8; norm_eps 1e-6; "
                      "no thresholds.json (threshold 0.5)")
    jobs.append(("tiny-fused-bias", tiny_fused_bias))

    def tiny_bf16():
        cfg = EmCoderConfig(**small)
        model, g = build(cfg, False, 4)
        write_fixture("tiny-bf16", model, cfg, token_inputs(512, g), make_thresholds(g, False),
                      "bf16", "canonical", "canonical",
                      "canonical, every tensor stored BF16 (freqs too); goldens computed from "
                      "the BF16 values upcast to f32")
    jobs.append(("tiny-bf16", tiny_bf16))

    def tiny_vocab_bf16():
        cfg = EmCoderConfig(vocab_size=50368, d_model=16, n_head=2, n_layers=1, d_ffn=40,
                            dropout=0.1)
        model, g = build(cfg, False, 5)
        seqs = encode(load_tokenizer(), TEXTS)
        write_fixture("tiny-vocab-bf16", model, cfg, seqs, make_thresholds(g, False), "bf16",
                      "canonical", "canonical",
                      "full 50368 vocab, BF16; inputs are real texts tokenized with the "
                      "tokenizers package from assets/tokenizer.json ([CLS] ... [SEP])",
                      texts=TEXTS)
    jobs.append(("tiny-vocab-bf16", tiny_vocab_bf16))

    for name, fn in jobs:
        if args.only in (None, name):
            fn()


if __name__ == "__main__":
    main()
